"""Which instruction-set variants of the kernels this CPU can run.

Every kernel module is built for baseline x86-64 and, on x86-64 builds, again
for the x86-64-v3 (AVX2, FMA, BMI1/2, F16C, MOVBE, LZCNT) and x86-64-v4
(AVX-512 F/BW/CD/DQ/VL) levels (see build_tools/variants.py).
``optcore.kernels`` asks this module, which is itself always built for the
baseline, which of those the CPU and the operating system support, and loads
the best one. The checks read CPUID and, for the wide registers, XGETBV: a CPU
that has AVX but whose OS does not save the YMM/ZMM state must not run AVX code.
"""

cdef extern from * nogil:
    """
    #if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    #include <cpuid.h>
    #define OPTCORE_X86 1

    static unsigned long long optcore_xgetbv0(void) {
        unsigned int lo, hi;
        __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
        return ((unsigned long long)hi << 32) | lo;
    }

    /* 0: baseline only, 3: x86-64-v3, 4: x86-64-v4 (each level includes the
       one below). */
    static int optcore_x86_level(void) {
        unsigned int a, b, c, d;
        unsigned int c1, b7, c81;
        unsigned long long xcr0;
        int level = 0;
        if (!__get_cpuid(1, &a, &b, &c, &d))
            return 0;
        c1 = c;
        if (__get_cpuid_max(0, 0) < 7)
            return 0;
        __cpuid_count(7, 0, a, b, c, d);
        b7 = b;
        if (!__get_cpuid(0x80000001u, &a, &b, &c, &d))
            return 0;
        c81 = c;
        /* x86-64-v2: SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CX16, LAHF */
        if (!((c1 & (1u << 0)) && (c1 & (1u << 9)) && (c1 & (1u << 19)) &&
              (c1 & (1u << 20)) && (c1 & (1u << 23)) && (c1 & (1u << 13)) &&
              (c81 & (1u << 0))))
            return 0;
        /* x86-64-v3: AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, OSXSAVE */
        if (!((c1 & (1u << 28)) && (b7 & (1u << 5)) && (b7 & (1u << 3)) &&
              (b7 & (1u << 8)) && (c1 & (1u << 29)) && (c1 & (1u << 12)) &&
              (c81 & (1u << 5)) && (c1 & (1u << 22)) && (c1 & (1u << 27))))
            return 0;
        xcr0 = optcore_xgetbv0();
        if ((xcr0 & 0x6) != 0x6)          /* the OS saves XMM and YMM state */
            return 0;
        level = 3;
        /* x86-64-v4: AVX512F, AVX512BW, AVX512CD, AVX512DQ, AVX512VL */
        if ((b7 & (1u << 16)) && (b7 & (1u << 30)) && (b7 & (1u << 28)) &&
            (b7 & (1u << 17)) && (b7 & (1u << 31)) &&
            (xcr0 & 0xe6) == 0xe6)        /* ... and opmask / ZMM state */
            level = 4;
        return level;
    }
    #else
    #define OPTCORE_X86 0
    static int optcore_x86_level(void) { return 0; }
    #endif
    """
    const int OPTCORE_X86
    int optcore_x86_level()


def x86_level():
    """0 (baseline or not x86), 3 (x86-64-v3) or 4 (x86-64-v4)."""
    return optcore_x86_level()


def supported_variants():
    """Names of the kernel variants this CPU runs, best first; always ends with
    ``"baseline"``."""
    cdef int level = optcore_x86_level()
    names = []
    if level >= 4:
        names.append("x86_64_v4")
    if level >= 3:
        names.append("x86_64_v3")
    names.append("baseline")
    return tuple(names)
