/* The inference pass pipeline: every pass, again and again until none
 * changes anything (removing an Identity can expose a BatchNorm to fold,
 * which exposes a Relu to fuse), then dead code removal. */
#include "passes/passes.h"

#include <stdio.h>

static const struct {
    const char *name;
    bool (*run)(tsr_graph *g);
} passes[] = {
    {"remove_identities", tsr_pass_remove_identities},
    {"fold_batchnorm", tsr_pass_fold_batchnorm},
    {"fuse_silu", tsr_pass_fuse_silu},
    {"fuse_conv", tsr_pass_fuse_conv},
    {"fuse_layernorm", tsr_pass_fuse_layernorm},
    {"fuse_gemm", tsr_pass_fuse_gemm},
    {"trim_conv_taps", tsr_pass_trim_conv_taps},
};

bool tsr_pass_fuse_each(tsr_graph *g, bool (*fuse_one)(tsr_graph *g, int n))
{
    bool changed = false;
    for (int n = 0; n < g->n_nodes;) {
        if (fuse_one(g, n))
            changed = true;
        else
            n++;
    }
    return changed;
}

/* In debug builds: the verifier's verdict on the graph a pass left. */
static tsr_status check_after(const tsr_graph *g, const char *pass)
{
#ifndef NDEBUG
    if (tsr_graph_verify(g) != TSR_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tsr_last_error());
        return tsr_error(TSR_ERR_INTERNAL, "the graph is invalid after pass %s: %s", pass, msg);
    }
#else
    (void)g;
    (void)pass;
#endif
    return TSR_OK;
}

tsr_status tsr_passes_run(tsr_graph *g)
{
    if (!g)
        return tsr_error(TSR_ERR_INVALID_ARGUMENT, "tsr_passes_run: graph is NULL");
    /* Every pass removes nodes when it changes anything, except
     * trim_conv_taps, which trims each convolution once, in the first
     * round (the others never give it new taps to drop); so the fixed
     * point comes within as many rounds as there are nodes. */
    int max_rounds = g->n_nodes + 1;
    bool changed = true;
    for (int round = 0; changed; round++) {
        if (round > max_rounds)
            return tsr_error(TSR_ERR_INTERNAL,
                             "the passes did not reach a fixed point in %d rounds", max_rounds);
        changed = false;
        for (size_t p = 0; p < sizeof passes / sizeof passes[0]; p++) {
            if (!passes[p].run(g))
                continue;
            changed = true;
            TSR_CHECK(check_after(g, passes[p].name));
        }
    }
    tsr_graph_remove_dead(g);
    return check_after(g, "remove_dead");
}
