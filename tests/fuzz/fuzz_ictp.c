/* ICTP model files through tsr_ictp_model_load. A model is two files, so
 * an input is a container: a little-endian u32 n, then n bytes of the JSON
 * configuration (MODEL.json), then the state_dict archive (MODEL.npz); the
 * seeds are tiny random models as tests/python/ictp_reference.py writes
 * them. Loading is bounded by fuzz_check_load; a model that loads must
 * compile on `ref` (float64, one thread) and evaluate a two-atom molecule
 * of its first species with forces, or fail cleanly. */
#include "fuzz.h"

#include <tessera/ictp.h>

#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint32_t n_json;
    memcpy(&n_json, data, 4);
    size_t rest = size - 4, json = n_json < rest ? n_json : rest;
    const char *npz = fuzz_write_file(data + 4 + json, rest - json, ".npz");
    if (!npz || !fuzz_write_file(data + 4, json, ".json"))
        return 0;
    tsr_ictp_model *model = NULL;
    tsr_ictp_evaluator *ev = NULL;
    size_t before = fuzz_allocated();
    tsr_status st = tsr_ictp_model_load(npz, &model);
    fuzz_check_load(before, size, "tsr_ictp_model_load");
    if (st != TSR_OK)
        return 0;
    int32_t z[1];
    tsr_ictp_options opt;
    tsr_ictp_options_init(&opt);
    opt.device = "ref";
    opt.dtype = TSR_FLOAT64;
    opt.threads = 1;
    if (tsr_ictp_model_species(model, z, 1) >= 1 &&
        tsr_ictp_evaluator_create(model, &opt, &ev) == TSR_OK) {
        int32_t numbers[2] = {z[0], z[0]};
        double pos[6] = {0, 0, 0, 0.9, 0.2, -0.1}, energy, forces[6];
        tsr_atoms *atoms = NULL;
        if (tsr_atoms_create(2, numbers, pos, NULL, NULL, &atoms) == TSR_OK)
            (void)tsr_ictp_evaluate(ev, atoms, &energy, forces, NULL, NULL);
        tsr_atoms_destroy(atoms);
    }
    tsr_ictp_evaluator_destroy(ev);
    tsr_ictp_model_destroy(model);
    return 0;
}
