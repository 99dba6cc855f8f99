/*
 * tests/fuzz_safetensors.c - libFuzzer entry point for the safetensors
 * reader: any byte string must be either rejected with a message or
 * accepted with every tensor's bytes inside the buffer.
 */
#include "sightline/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sl_safetensors *st = NULL;
    if (sl_safetensors_open_memory(data, size, "fuzz", &st) != SL_OK) {
        if (st || sl_last_error()[0] == '\0') abort(); /* failures leave a message, no handle */
        return 0;
    }
    size_t n = sl_safetensors_count(st);
    const uint8_t *end = data + size;
    for (size_t i = 0; i < n; i++) {
        const sl_tensor_info *t = sl_safetensors_at(st, i);
        const uint8_t *p = t->data;
        if (p < data || p > end || t->nbytes > (size_t)(end - p)) abort();
        if (sl_safetensors_find(st, t->name) != t) abort();
        /* touch every byte (ASan checks the range) */
        volatile uint8_t acc = 0;
        for (size_t j = 0; j < t->nbytes; j++) acc ^= p[j];
        (void)acc;
        if (t->count <= 4096 &&
            (t->dtype == SL_DT_F32 || t->dtype == SL_DT_F16 || t->dtype == SL_DT_BF16)) {
            float *buf = malloc((t->count ? t->count : 1) * sizeof(float));
            if (buf) {
                if (sl_tensor_to_f32(t, buf) != SL_OK) abort();
                free(buf);
            }
        }
    }
    (void)sl_safetensors_metadata(st, "format");
    sl_safetensors_free(st);
    return 0;
}
