#!/usr/bin/env python3
"""Rewrite a .cu file into C++ that g++ compiles against the CUDA emulator.

Two constructs of CUDA C++ have no C++ spelling, so the build rewrites them
(the sources stay idiomatic CUDA; the output is a build product):

  kernel<<<grid, block[, smem[, stream]]>>>(args)
      -> ehat_emu::launch ("kernel", kernel, dim3 (grid), dim3 (block),
                           smem, stream, args)
  extern __shared__ [__align__ (n)] T name[];
      -> T *name = (T *) ehat_emu_dynamic_smem ();

Everything else is left to kernels/emu/ehat-cuda-emu.h, force-included
before the result.  Usage: ehat-cuda-emu-rewrite.py IN.cu OUT.cc
"""

import re
import sys

DYN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?"
    r"([A-Za-z_][\w\s:*]*?)\s+([A-Za-z_]\w*)\s*\[\s*\]\s*;")


def fail(src, pos, why):
    line = src.count("\n", 0, pos) + 1
    sys.exit(f"{sys.argv[1]}:{line}: cannot rewrite for the emulator: {why}")


def match_forward(src, i, open_c, close_c):
    """Index just past the bracket that closes the one at src[i]."""
    depth = 0
    for j in range(i, len(src)):
        if src[j] == open_c:
            depth += 1
        elif src[j] == close_c:
            depth -= 1
            if depth == 0:
                return j + 1
    fail(src, i, f"unbalanced {open_c}")


def kernel_start(src, end):
    """Start of the kernel expression that ends (exclusive) at `end`:
    an identifier, optionally qualified, optionally with template args."""
    j = end
    while j > 0 and src[j - 1].isspace():
        j -= 1
    if src[j - 1] == ">":
        depth = 0
        while j > 0:
            j -= 1
            if src[j] == ">":
                depth += 1
            elif src[j] == "<":
                depth -= 1
                if depth == 0:
                    break
        while j > 0 and src[j - 1].isspace():
            j -= 1
    k = j
    while k > 0 and (src[k - 1].isalnum() or src[k - 1] in "_:"):
        k -= 1
    if k == j:
        fail(src, end, "no kernel name before <<<")
    return k


def split_top(text):
    """Comma-separated parts of text at bracket depth 0."""
    parts, depth, cur = [], 0, ""
    for c in text:
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        parts.append(cur.strip())
    return parts


def rewrite_launches(src):
    out, pos = [], 0
    while True:
        i = src.find("<<<", pos)
        if i < 0:
            out.append(src[pos:])
            return "".join(out)
        k = kernel_start(src, i)
        j = src.find(">>>", i)
        if j < 0:
            fail(src, i, "<<< without >>>")
        config = split_top(src[i + 3:j].replace("\\\n", " "))
        if not 2 <= len(config) <= 4:
            fail(src, i, "launch configuration needs 2 to 4 parts")
        config += ["0", "0"][len(config) - 2:]
        p = j + 3
        while p < len(src) and (src[p].isspace() or src[p] == "\\"):
            p += 1
        if p >= len(src) or src[p] != "(":
            fail(src, j, "no argument list after >>>")
        q = match_forward(src, p, "(", ")")
        kernel = src[k:i].strip()
        args = src[p + 1:q - 1]
        call = (f'ehat_emu::launch ("{" ".join(kernel.split())}", {kernel}, '
                f"dim3 ({config[0]}), dim3 ({config[1]}), "
                f"(size_t) ({config[2]}), (cudaStream_t) ({config[3]})")
        # keep the line count (g++'s messages name the .cu's lines)
        nl = src.count("\n", k, p + 1)
        brk = " \\\n" if "\\\n" in src[k:p + 1] else "\n"
        call += (", " + brk * nl + args if args.strip() else brk * nl) + ")"
        out.append(src[pos:k])
        out.append(call)
        pos = q


def main():
    src = open(sys.argv[1], encoding="utf-8").read()
    src = DYN_SHARED.sub(
        lambda m: f"{m.group(1)} *{m.group(2)} = "
        f"({m.group(1)} *) ehat_emu_dynamic_smem ();", src)
    src = rewrite_launches(src)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(f'#line 1 "{sys.argv[1]}"\n')
        f.write(src)


if __name__ == "__main__":
    main()
