/* `tessera`: run, inspect and benchmark models from the command line. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const cli_command *const commands[] = {&cli_run_command, &cli_info_command,
                                              &cli_bench_command, &cli_grad_command,
                                              &cli_train_command, &cli_ictp_command,
                                              &cli_md_command};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void print_usage(FILE *out)
{
    fprintf(out, "Usage: tessera <command> [options]\n"
                 "       tessera help <command>\n"
                 "       tessera --version\n\n"
                 "Commands:\n");
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-7s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(out,
            "\nA MODEL is an ONNX file or %s (the built-in ResNet-50 with random\n"
            "weights). Run 'tessera help <command>' for a command's options.\n",
            CLI_BUILTIN_RESNET50);
}

static const cli_command *find_command(const char *name)
{
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i]->name, name) == 0)
            return commands[i];
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return CLI_USAGE;
    }
    const char *first = argv[1];
    if (strcmp(first, "--help") == 0 || strcmp(first, "-h") == 0) {
        print_usage(stdout);
        return CLI_OK;
    }
    if (strcmp(first, "--version") == 0 || strcmp(first, "version") == 0) {
        printf("tessera %s\n", TSR_VERSION_STRING);
        return CLI_OK;
    }
    if (strcmp(first, "help") == 0) {
        if (argc == 2) {
            print_usage(stdout);
            return CLI_OK;
        }
        const cli_command *cmd = find_command(argv[2]);
        if (!cmd)
            return cli_usage_error(NULL, "unknown command '%s'", argv[2]);
        if (argc > 3)
            return cli_usage_error(NULL, "'tessera help' takes one command, got %d", argc - 2);
        fputs(cmd->usage, stdout);
        return CLI_OK;
    }
    const cli_command *cmd = find_command(first);
    if (!cmd) {
        if (first[0] == '-')
            return cli_usage_error(NULL, "unknown option '%s'", first);
        return cli_usage_error(NULL, "unknown command '%s'", first);
    }
    /* Results go to stdout and progress to stderr: line buffering keeps
     * them in order when both end up in one log. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    return cmd->main(argc - 2, argv + 2);
}
