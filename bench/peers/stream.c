// STREAM-like memory bandwidth probe: the triad a[i] = b[i] + s*c[i] over three arrays far
// larger than the last-level cache, plus a read-only sum (closer to what decode does: it
// streams weights and writes little). Bytes counted as STREAM does: 3 x 8 x N for the triad
// (write-allocate traffic not counted), 8 x N for the sum. Best of REPS passes.
//
// usage: stream THREADS [MiB_per_array] [REPS]   ->  one JSON line on stdout
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static double now(void) { return omp_get_wtime(); }

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s THREADS [MiB_per_array] [REPS]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    long mib = argc > 2 ? atol(argv[2]) : 256;
    int reps = argc > 3 ? atoi(argv[3]) : 10;
    if (threads < 1 || mib < 1 || reps < 1) {
        fprintf(stderr, "stream: THREADS, MiB and REPS must be positive\n");
        return 2;
    }
    omp_set_num_threads(threads);
    long n = mib * 1024L * 1024L / (long)sizeof(double);
    double *a = malloc(n * sizeof(double)), *b = malloc(n * sizeof(double)),
           *c = malloc(n * sizeof(double));
    if (!a || !b || !c) {
        fprintf(stderr, "stream: cannot allocate 3 x %ld MiB\n", mib);
        return 1;
    }
    // First touch in parallel, with the same static schedule as the timed loops.
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) { a[i] = 0.0; b[i] = 1.0; c[i] = 2.0; }

    const double s = 3.0;
    double best_triad = 1e30, best_read = 1e30, sink = 0.0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) a[i] = b[i] + s * c[i];
        double t1 = now();
        // Eight partial sums so the add latency does not bound the loop (n is a multiple of 8).
        double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
        for (long i = 0; i < n; i += 8) {
            sum += ((a[i] + a[i + 1]) + (a[i + 2] + a[i + 3])) +
                   ((a[i + 4] + a[i + 5]) + (a[i + 6] + a[i + 7]));
        }
        double t2 = now();
        sink += sum;
        if (t1 - t0 < best_triad) best_triad = t1 - t0;
        if (t2 - t1 < best_read) best_read = t2 - t1;
    }
    // The checksum proves the loops ran (a = 1 + 3*2 = 7 everywhere).
    double expect = 7.0 * (double)n * reps;
    if (sink != expect) {
        fprintf(stderr, "stream: checksum %.0f != %.0f\n", sink, expect);
        return 1;
    }
    printf("{\"threads\": %d, \"mib_per_array\": %ld, \"reps\": %d, "
           "\"triad_gb_s\": %.3f, \"read_gb_s\": %.3f}\n",
           threads, mib, reps, 3.0 * 8.0 * (double)n / best_triad / 1e9,
           8.0 * (double)n / best_read / 1e9);
    free(a); free(b); free(c);
    return 0;
}
