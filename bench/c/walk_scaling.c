/* What two cores of this machine give on the least work any capture pipeline does: walk the
 * record headers of a classic pcap file and load the first bytes of each frame. One thread
 * walks the whole file, then two threads walk a half each (split at a record boundary);
 * rounds alternate, so the machine's drift hits both alike. The file is mapped with
 * MAP_POPULATE (no page faults), or, with -f, faulted in as read (the mapping is dropped
 * between runs).
 * cc -O2 -pthread -o walk_scaling walk_scaling.c && ./walk_scaling [-f] FILE [ROUNDS] */
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

static const uint8_t *base;

struct part {
    size_t from, to;
    uint64_t sum, packets;
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *walk(void *arg) {
    struct part *p = arg;
    uint64_t sum = 0, n = 0;
    size_t off = p->from;
    while (off + 16 <= p->to) {
        uint32_t caplen;
        uint64_t w = 0;
        memcpy(&caplen, base + off + 8, 4);
        /* a word of the frame's IP header, as a dissector would first read it */
        if (caplen >= 34)
            memcpy(&w, base + off + 16 + 26, 8);
        sum += w ^ caplen;
        n++;
        off += 16 + caplen;
    }
    p->sum = sum;
    p->packets = n;
    return NULL;
}

int main(int argc, char **argv) {
    int fault = argc > 1 && strcmp(argv[1], "-f") == 0;
    if (argc < 2 + fault) {
        fprintf(stderr, "usage: %s [-f] FILE [ROUNDS]\n", argv[0]);
        return 2;
    }
    int rounds = argc > 2 + fault ? atoi(argv[2 + fault]) : 9;
    int fd = open(argv[1 + fault], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 24) {
        perror(argv[1 + fault]);
        return 1;
    }
    size_t size = st.st_size;
    base = mmap(NULL, size, PROT_READ, MAP_SHARED | (fault ? 0 : MAP_POPULATE), fd, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    /* the first record boundary in the second half */
    size_t off = 24, mid = 0;
    while (off + 16 <= size) {
        uint32_t caplen;
        memcpy(&caplen, base + off + 8, 4);
        if (!mid && off >= size / 2)
            mid = off;
        off += 16 + caplen;
    }
    if (!mid)
        mid = size;
    double ratios[256];
    rounds = rounds < 1 ? 1 : rounds > 256 ? 256 : rounds;
    for (int r = 0; r < rounds; r++) {
        if (fault)
            madvise((void *)base, size, MADV_DONTNEED);
        struct part all = {24, size, 0, 0};
        double t = now();
        walk(&all);
        double one = now() - t;
        if (fault)
            madvise((void *)base, size, MADV_DONTNEED);
        struct part a = {24, mid, 0, 0}, b = {mid, size, 0, 0};
        pthread_t ta, tb;
        t = now();
        pthread_create(&ta, NULL, walk, &a);
        pthread_create(&tb, NULL, walk, &b);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        double two = now() - t;
        if (all.packets != a.packets + b.packets || all.sum != a.sum + b.sum) {
            fprintf(stderr, "the halves do not add up\n");
            return 1;
        }
        ratios[r] = one / two;
        printf("round %d: one thread %.3f s (%.2f Mpkt/s), two %.3f s, %.2fx\n", r, one,
               all.packets / one / 1e6, two, ratios[r]);
    }
    /* median of the ratios */
    for (int i = 1; i < rounds; i++)
        for (int j = i; j > 0 && ratios[j - 1] > ratios[j]; j--) {
            double x = ratios[j];
            ratios[j] = ratios[j - 1];
            ratios[j - 1] = x;
        }
    printf("median two / one: %.2fx over %d rounds\n", ratios[rounds / 2], rounds);
    return 0;
}
