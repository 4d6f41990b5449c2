// CRC-32C in hardware, chosen at run time (crc32c.h). Every path computes the
// same function as the table in SpoolCodec.swift: the instructions implement
// exactly the reflected Castagnoli polynomial 0x82F63B78 on the raw register
// (Intel SDM, CRC32; Arm ARM, CRC32C*), with no inversion of their own.
//
// Each function is compiled for its instruction set with a target attribute,
// so the rest of the binary keeps the baseline (x86-64, armv7-a, armv8-a) and
// runs on CPUs without them; only the returned pointer ever calls them.
#include "crc32c.h"

#include <string.h>

// Three streams at once. The crc32 instruction takes three cycles on the
// cores measured and can start one every cycle, so one serial chain of them
// uses a third of what the CPU can do: `perf` put the serial version at 7% of
// the daemon's time relaying 5 MB messages (issue 11). Each block of 3 × L
// bytes is checksummed as three independent runs of L bytes, the second and
// third from a zero register, and the three are joined by the linearity of a
// CRC without pre- or post-inversion (which this function never applies):
//   crc(r, A‖B‖C) = shift(shift(crc(r, A), L) ^ crc(0, B), L) ^ crc(0, C),
// where shift(c, n) is the register after n more zero bytes: c · x^(8n)
// modulo the polynomial, as zlib's crc32_combine computes it. The two block
// lengths' x^(8L) are computed once, when the function is chosen.
#if defined(__x86_64__) || defined(__aarch64__)

#define CRC32C_POLY 0x82F63B78u   // reflected: bit 31 is x^0
#define CRC32C_LONG 4096          // L of the long blocks (a 64 KiB record: five)
#define CRC32C_SHORT 512          // then blocks of 3 × 512 while they fit

// a · b modulo the polynomial, both reflected.
static uint32_t multmodp(uint32_t a, uint32_t b) {
    uint32_t product = 0;
    for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
        if (a & m) product ^= b;
        b = (b & 1) ? (b >> 1) ^ CRC32C_POLY : b >> 1;
    }
    return product;
}

// x^(8n) modulo the polynomial, by square and multiply.
static uint32_t x8nmodp(size_t n) {
    uint32_t result = 1u << 31;      // x^0
    uint32_t power = 1u << 23;       // x^8
    while (n != 0) {
        if (n & 1) result = multmodp(power, result);
        power = multmodp(power, power);
        n >>= 1;
    }
    return result;
}

static uint32_t shift_long, shift_short;

static void crc32c_prepare_shifts(void) {
    shift_long = x8nmodp(CRC32C_LONG);
    shift_short = x8nmodp(CRC32C_SHORT);
}

#endif

#if defined(__x86_64__)

#include <cpuid.h>
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static uint64_t crc32c_sse42_words(uint64_t c, const unsigned char *p, size_t words) {
    while (words-- > 0) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
    }
    return c;
}

// One block of 3 × len bytes (len a multiple of 8), three chains at once.
__attribute__((target("sse4.2")))
static uint64_t crc32c_sse42_block(uint64_t c0, const unsigned char *p, size_t len, uint32_t shift) {
    uint64_t c1 = 0, c2 = 0;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t w0, w1, w2;
        memcpy(&w0, p + i, 8);
        memcpy(&w1, p + len + i, 8);
        memcpy(&w2, p + 2 * len + i, 8);
        c0 = _mm_crc32_u64(c0, w0);
        c1 = _mm_crc32_u64(c1, w1);
        c2 = _mm_crc32_u64(c2, w2);
    }
    uint32_t ab = multmodp(shift, (uint32_t)c0) ^ (uint32_t)c1;
    return multmodp(shift, ab) ^ (uint32_t)c2;
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t len) {
    const unsigned char *p = data;
    uint64_t c = crc;
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    while (len >= 3 * CRC32C_LONG) {
        c = crc32c_sse42_block(c, p, CRC32C_LONG, shift_long);
        p += 3 * CRC32C_LONG;
        len -= 3 * CRC32C_LONG;
    }
    while (len >= 3 * CRC32C_SHORT) {
        c = crc32c_sse42_block(c, p, CRC32C_SHORT, shift_short);
        p += 3 * CRC32C_SHORT;
        len -= 3 * CRC32C_SHORT;
    }
    c = crc32c_sse42_words(c, p, len / 8);
    p += len & ~(size_t)7;
    len &= 7;
    while (len > 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    return (uint32_t)c;
}

// CPUID leaf 1, ECX bit 20 (Intel SDM vol. 2A, CPUID): what
// __builtin_cpu_supports("sse4.2") reads too, without the 4.6 KB of libgcc's
// CPU model tables it links in.
cl_crc32c_function cl_crc32c_hardware(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_2)) return NULL;
    crc32c_prepare_shifts();
    return crc32c_sse42;
}

#elif defined(__aarch64__)

#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)   // arch/arm64/include/uapi/asm/hwcap.h
#endif

// CRC32 is optional in ARMv8.0 (every Raspberry Pi core from the Cortex-A53 on
// has it) and mandatory from ARMv8.1.
__attribute__((target("+crc")))
static uint32_t crc32c_armv8_block(uint32_t c0, const unsigned char *p, size_t len, uint32_t shift) {
    uint32_t c1 = 0, c2 = 0;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t w0, w1, w2;
        memcpy(&w0, p + i, 8);
        memcpy(&w1, p + len + i, 8);
        memcpy(&w2, p + 2 * len + i, 8);
        c0 = __crc32cd(c0, w0);
        c1 = __crc32cd(c1, w1);
        c2 = __crc32cd(c2, w2);
    }
    return multmodp(shift, multmodp(shift, c0) ^ c1) ^ c2;
}

__attribute__((target("+crc")))
static uint32_t crc32c_armv8(uint32_t crc, const void *data, size_t len) {
    const unsigned char *p = data;
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        crc = __crc32cb(crc, *p++);
        len--;
    }
    while (len >= 3 * CRC32C_LONG) {
        crc = crc32c_armv8_block(crc, p, CRC32C_LONG, shift_long);
        p += 3 * CRC32C_LONG;
        len -= 3 * CRC32C_LONG;
    }
    while (len >= 3 * CRC32C_SHORT) {
        crc = crc32c_armv8_block(crc, p, CRC32C_SHORT, shift_short);
        p += 3 * CRC32C_SHORT;
        len -= 3 * CRC32C_SHORT;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        crc = __crc32cd(crc, w);
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        crc = __crc32cb(crc, *p++);
        len--;
    }
    return crc;
}

cl_crc32c_function cl_crc32c_hardware(void) {
    if (!(getauxval(AT_HWCAP) & HWCAP_CRC32)) return NULL;
    crc32c_prepare_shifts();
    return crc32c_armv8;
}

#elif defined(__arm__)

#include <sys/auxv.h>
#ifndef AT_HWCAP2
#define AT_HWCAP2 26
#endif
#ifndef HWCAP2_CRC32
#define HWCAP2_CRC32 (1 << 4)  // arch/arm/include/uapi/asm/hwcap.h
#endif

// armv7 code on an ARMv8 core (a Pi 3 or 4 running a 32-bit system): the
// AArch32 CRC32C instructions. arm_acle.h declares them only when the whole
// file is compiled for armv8-a+crc, so the builtins are called directly. The
// "+simd" only keeps the hard-float ABI (-mfloat-abi=hard needs an FPU in the
// target); the function uses no FP or SIMD register.
__attribute__((target("arch=armv8-a+crc+simd")))
static uint32_t crc32c_armv8(uint32_t crc, const void *data, size_t len) {
    const unsigned char *p = data;
    while (len > 0 && ((uintptr_t)p & 3) != 0) {
        crc = __builtin_arm_crc32cb(crc, *p++);
        len--;
    }
    while (len >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        crc = __builtin_arm_crc32cw(crc, w);
        p += 4;
        len -= 4;
    }
    while (len > 0) {
        crc = __builtin_arm_crc32cb(crc, *p++);
        len--;
    }
    return crc;
}

cl_crc32c_function cl_crc32c_hardware(void) {
    return (getauxval(AT_HWCAP2) & HWCAP2_CRC32) ? crc32c_armv8 : NULL;
}

#else

cl_crc32c_function cl_crc32c_hardware(void) { return NULL; }

#endif
