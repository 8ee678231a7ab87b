/* The libpcap file path at its fastest: pcap_next_ex in a loop, counting packets and bytes.
 * The reference point of the passive benchmark (bench/src/bin/passive_peers.rs).
 * cc -O2 -o pcap_loop pcap_loop.c -lpcap */
#include <pcap/pcap.h>
#include <stdio.h>

int main(int argc, char **argv) {
    char err[PCAP_ERRBUF_SIZE];
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    pcap_t *p = pcap_open_offline(argv[1], err);
    if (!p) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct pcap_pkthdr *h;
    const unsigned char *d;
    unsigned long long n = 0, bytes = 0, touch = 0;
    int r;
    while ((r = pcap_next_ex(p, &h, &d)) == 1) {
        n++;
        bytes += h->len;
        touch += d[0];
    }
    printf("%llu %llu %llu\n", n, bytes, touch & 1);
    pcap_close(p);
    return r == PCAP_ERROR ? 1 : 0;
}
