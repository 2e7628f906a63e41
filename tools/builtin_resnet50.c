/* The built-in ResNet-50: torchvision's resnet50 architecture (bottleneck
 * blocks [3, 4, 6, 3], stride on the 3x3 convolution, 1000 classes) built
 * through the C builder API, with seeded random weights. It lets `tessera
 * bench` run the main workload with no model file at hand. Names follow
 * torchvision's state dict (layer1.0.conv1.weight, ...). */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define RESNET50_SEED 0x7e55e4a50ull

typedef struct {
    tsr_graph *g;
    cli_rng rng;
    float *scratch;
    size_t scratch_len;
    bool out_of_memory; /* the library's error message does not say so */
} builder;

static tsr_status need_scratch(builder *b, size_t n)
{
    if (n <= b->scratch_len)
        return TSR_OK;
    float *p = realloc(b->scratch, n * sizeof *p);
    if (!p) {
        b->out_of_memory = true;
        return TSR_ERR_OUT_OF_MEMORY;
    }
    b->scratch = p;
    b->scratch_len = n;
    return TSR_OK;
}

typedef enum { FILL_NORMAL, FILL_UNIFORM } fill_kind;

/* A float32 constant: mean + scale * normal(0, 1), or uniform in
 * [mean, mean + scale). */
static tsr_status add_param(builder *b, const char *name, int rank, const int64_t *dims,
                            fill_kind kind, double mean, double scale)
{
    tsr_tensor t = {.dtype = TSR_FLOAT32, .rank = rank};
    size_t n = 1;
    for (int d = 0; d < rank; d++) {
        t.dims[d] = dims[d];
        n *= (size_t)dims[d];
    }
    CLI_CHECK(need_scratch(b, n));
    for (size_t i = 0; i < n; i++) {
        double r = kind == FILL_NORMAL ? cli_rng_normal(&b->rng) : cli_rng_uniform(&b->rng);
        b->scratch[i] = (float)(mean + scale * r);
    }
    t.data = b->scratch;
    return tsr_graph_add_constant(b->g, name, &t);
}

/* Convolution without bias, weights He-normal so that activations keep
 * their scale through the ReLUs. */
static tsr_status conv(builder *b, const char *name, const char *x, int cin, int cout, int k,
                       int stride)
{
    char w[128];
    snprintf(w, sizeof w, "%s.weight", name);
    const int64_t dims[4] = {cout, cin, k, k};
    CLI_CHECK(add_param(b, w, 4, dims, FILL_NORMAL, 0.0, sqrt(2.0 / (double)(cin * k * k))));
    const int64_t kernel[2] = {k, k}, strides[2] = {stride, stride};
    const int64_t pads[4] = {k / 2, k / 2, k / 2, k / 2};
    const tsr_attr attrs[] = {TSR_ATTR_INTS("kernel_shape", kernel, 2),
                              TSR_ATTR_INTS("strides", strides, 2), TSR_ATTR_INTS("pads", pads, 4)};
    const char *inputs[] = {x, w};
    const char *outputs[] = {name};
    return tsr_graph_add_node(b->g, "Conv", "", name, 2, inputs, 1, outputs, 3, attrs);
}

/* Inference-mode batch norm with statistics that are not the identity, so
 * that a backend folding or skipping it wrongly shows in the output.
 * `gamma` scales the output: the last norm of each residual branch is
 * kept small, as trained ResNets do, so the residual sum stays bounded. */
static tsr_status batch_norm(builder *b, const char *name, const char *x, int c, double gamma)
{
    char scale[128], bias[128], mean[128], var[128];
    snprintf(scale, sizeof scale, "%s.weight", name);
    snprintf(bias, sizeof bias, "%s.bias", name);
    snprintf(mean, sizeof mean, "%s.running_mean", name);
    snprintf(var, sizeof var, "%s.running_var", name);
    const int64_t dims[1] = {c};
    CLI_CHECK(add_param(b, scale, 1, dims, FILL_UNIFORM, 0.75 * gamma, 0.5 * gamma));
    CLI_CHECK(add_param(b, bias, 1, dims, FILL_NORMAL, 0.0, 0.1));
    CLI_CHECK(add_param(b, mean, 1, dims, FILL_NORMAL, 0.0, 0.1));
    CLI_CHECK(add_param(b, var, 1, dims, FILL_UNIFORM, 0.75, 0.5));
    const tsr_attr attrs[] = {TSR_ATTR_F("epsilon", 1e-5), TSR_ATTR_F("momentum", 0.9)};
    const char *inputs[] = {x, scale, bias, mean, var};
    const char *outputs[] = {name};
    return tsr_graph_add_node(b->g, "BatchNormalization", "", name, 5, inputs, 1, outputs, 2,
                              attrs);
}

static tsr_status unary(builder *b, const char *op, const char *x, const char *y)
{
    const char *inputs[] = {x};
    const char *outputs[] = {y};
    return tsr_graph_add_node(b->g, op, "", y, 1, inputs, 1, outputs, 0, NULL);
}

/* conv -> batch norm [-> relu]; the result is named `out`. */
static tsr_status conv_bn(builder *b, const char *conv_name, const char *bn_name, const char *x,
                          const char *out, int cin, int cout, int k, int stride, double gamma,
                          bool relu)
{
    CLI_CHECK(conv(b, conv_name, x, cin, cout, k, stride));
    CLI_CHECK(batch_norm(b, bn_name, conv_name, cout, gamma));
    return relu ? unary(b, "Relu", bn_name, out) : TSR_OK;
}

/* torchvision's Bottleneck: 1x1 reduce, 3x3 (with the stride), 1x1
 * expand by 4, plus the shortcut (1x1 conv + norm when the shape
 * changes), then ReLU. */
static tsr_status bottleneck(builder *b, int layer, int block, const char *x, int cin, int width,
                             int stride, const char *out)
{
    char p[32], n[8][128];
    snprintf(p, sizeof p, "layer%d.%d", layer, block);
    const char *fmt[8] = {"%s.conv1", "%s.bn1",   "%s.relu1", "%s.conv2",
                          "%s.bn2",   "%s.relu2", "%s.conv3", "%s.bn3"};
    for (int i = 0; i < 8; i++)
        snprintf(n[i], sizeof n[i], fmt[i], p);
    int cout = width * 4;
    CLI_CHECK(conv_bn(b, n[0], n[1], x, n[2], cin, width, 1, 1, 1.0, true));
    CLI_CHECK(conv_bn(b, n[3], n[4], n[2], n[5], width, width, 3, stride, 1.0, true));
    CLI_CHECK(conv_bn(b, n[6], n[7], n[5], NULL, width, cout, 1, 1, 0.3, false));
    char shortcut[128], ds_conv[128], ds_bn[128], sum[128];
    snprintf(shortcut, sizeof shortcut, "%s", x);
    if (stride != 1 || cin != cout) {
        snprintf(ds_conv, sizeof ds_conv, "%s.downsample.0", p);
        snprintf(ds_bn, sizeof ds_bn, "%s.downsample.1", p);
        CLI_CHECK(conv_bn(b, ds_conv, ds_bn, x, NULL, cin, cout, 1, stride, 1.0, false));
        snprintf(shortcut, sizeof shortcut, "%s", ds_bn);
    }
    snprintf(sum, sizeof sum, "%s.add", p);
    const char *inputs[] = {n[7], shortcut};
    const char *outputs[] = {sum};
    CLI_CHECK(tsr_graph_add_node(b->g, "Add", "", sum, 2, inputs, 1, outputs, 0, NULL));
    return unary(b, "Relu", sum, out);
}

static tsr_status build(builder *b)
{
    const int64_t in_dims[4] = {0, 3, 224, 224};
    const char *const in_names[4] = {"batch", NULL, NULL, NULL};
    CLI_CHECK(tsr_graph_add_input(b->g, "input", TSR_FLOAT32, 4, in_dims, in_names));
    CLI_CHECK(conv_bn(b, "conv1", "bn1", "input", "relu", 3, 64, 7, 2, 1.0, true));
    {
        const int64_t kernel[2] = {3, 3}, strides[2] = {2, 2}, pads[4] = {1, 1, 1, 1};
        const tsr_attr attrs[] = {TSR_ATTR_INTS("kernel_shape", kernel, 2),
                                  TSR_ATTR_INTS("strides", strides, 2),
                                  TSR_ATTR_INTS("pads", pads, 4)};
        const char *inputs[] = {"relu"};
        const char *outputs[] = {"maxpool"};
        CLI_CHECK(
            tsr_graph_add_node(b->g, "MaxPool", "", "maxpool", 1, inputs, 1, outputs, 3, attrs));
    }
    static const int blocks[4] = {3, 4, 6, 3};
    char x[128] = "maxpool", y[128];
    int cin = 64;
    for (int layer = 0; layer < 4; layer++) {
        int width = 64 << layer;
        for (int block = 0; block < blocks[layer]; block++) {
            int stride = block == 0 && layer > 0 ? 2 : 1;
            snprintf(y, sizeof y, "layer%d.%d", layer + 1, block);
            CLI_CHECK(bottleneck(b, layer + 1, block, x, cin, width, stride, y));
            snprintf(x, sizeof x, "%s", y);
            cin = width * 4;
        }
    }
    CLI_CHECK(unary(b, "GlobalAveragePool", x, "avgpool"));
    {
        const tsr_attr attrs[] = {TSR_ATTR_I("axis", 1)};
        const char *inputs[] = {"avgpool"};
        const char *outputs[] = {"flatten"};
        CLI_CHECK(
            tsr_graph_add_node(b->g, "Flatten", "", "flatten", 1, inputs, 1, outputs, 1, attrs));
    }
    const int64_t w_dims[2] = {1000, 2048}, b_dims[1] = {1000};
    CLI_CHECK(add_param(b, "fc.weight", 2, w_dims, FILL_NORMAL, 0.0, sqrt(1.0 / 2048.0)));
    CLI_CHECK(add_param(b, "fc.bias", 1, b_dims, FILL_NORMAL, 0.0, 0.01));
    const tsr_attr attrs[] = {TSR_ATTR_F("alpha", 1.0), TSR_ATTR_F("beta", 1.0),
                              TSR_ATTR_I("transB", 1)};
    const char *inputs[] = {"flatten", "fc.weight", "fc.bias"};
    const char *outputs[] = {"output"};
    CLI_CHECK(tsr_graph_add_node(b->g, "Gemm", "", "fc", 3, inputs, 1, outputs, 3, attrs));
    return tsr_graph_add_output(b->g, "output");
}

int cli_build_resnet50(tsr_graph **graph_out)
{
    builder b = {0};
    *graph_out = NULL;
    cli_rng_seed(&b.rng, RESNET50_SEED);
    tsr_status st = tsr_graph_create(&b.g);
    if (st == TSR_OK)
        st = build(&b);
    free(b.scratch);
    if (st != TSR_OK) {
        tsr_graph_destroy(b.g);
        if (b.out_of_memory)
            return cli_fail("%s: out of memory for the weights", CLI_BUILTIN_RESNET50);
        return cli_fail_status(CLI_BUILTIN_RESNET50);
    }
    *graph_out = b.g;
    return CLI_OK;
}
