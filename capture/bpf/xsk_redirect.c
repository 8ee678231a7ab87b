// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * xsk_redirect: the XDP program of mplane-capture's AF_XDP source.
 *
 * Redirects every frame to the AF_XDP socket registered for its RX queue in `xsks`
 * (XSKMAP, key = rx_queue_index) and passes it to the kernel stack when the queue has no
 * socket. In front of each redirected frame it writes 16 bytes of XDP metadata: the receive
 * time (bpf_ktime_get_ns, CLOCK_MONOTONIC) and a magic number, which user space reads just
 * before the packet in the UMEM frame. Frames longer than `max_len` (what fits in a UMEM
 * frame, set by the loader) are counted in `stats[0]` and passed, never delivered truncated;
 * frames of queues without a socket are counted in `stats[1]`. The loader clears `stamp` when
 * the kernel refuses bpf_xdp_adjust_meta (some kernels do not offer it to XDP programs): the
 * verifier then prunes the stamping branch as dead code and the frames carry no metadata.
 *
 * Rebuild with capture/bpf/build.sh (Debian: apt-get install clang llvm libbpf-dev); the
 * object is committed so that building the crate needs no BPF toolchain.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define META_MAGIC 0x6d504c78u /* "mPLx" */

struct meta {
	__u64 ts_ns;
	__u32 reserved;
	__u32 magic;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Largest frame that fits in a UMEM frame; the loader overrides it. */
volatile const __u32 max_len = 1792;
/* Whether to stamp frames with metadata; the loader clears it where the helper is refused. */
volatile const __u32 stamp = 1;

static __always_inline void count(__u32 key)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &key);
	if (c)
		*c += 1;
}

SEC("xdp")
int xsk_redirect(struct xdp_md *ctx)
{
	__u32 q = ctx->rx_queue_index;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	if (data + max_len < end) {
		count(0);
		return XDP_PASS;
	}
	if (!bpf_map_lookup_elem(&xsks, &q)) {
		count(1);
		return XDP_PASS;
	}
	if (stamp && bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct meta)) == 0) {
		struct meta *m = (void *)(long)ctx->data_meta;
		if ((void *)(m + 1) <= (void *)(long)ctx->data) {
			m->ts_ns = bpf_ktime_get_ns();
			m->reserved = 0;
			m->magic = META_MAGIC;
		}
	}
	return bpf_redirect_map(&xsks, q, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
