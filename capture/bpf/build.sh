#!/bin/sh
# Rebuilds xsk_redirect.o from xsk_redirect.c (committed, embedded by src/source/xdp.rs, so
# that building the crate needs no BPF toolchain). Debian: apt-get install clang llvm libbpf-dev
set -eu
cd "$(dirname "$0")"
arch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
clang -O2 -g -target bpf -I"/usr/include/$arch" -c xsk_redirect.c -o xsk_redirect.o
llvm-strip -g xsk_redirect.o 2>/dev/null || true   # keep BTF (.BTF), drop DWARF
ls -l xsk_redirect.o
