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

#if defined(__x86_64__)

#include <cpuid.h>
#include <nmmintrin.h>

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t len) {
    const unsigned char *p = data;
    uint64_t c = crc;
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        len -= 8;
    }
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
    if (!__get_cpuid(1, &a, &b, &c, &d)) return NULL;
    return (c & bit_SSE4_2) ? crc32c_sse42 : NULL;
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
static uint32_t crc32c_armv8(uint32_t crc, const void *data, size_t len) {
    const unsigned char *p = data;
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        crc = __crc32cb(crc, *p++);
        len--;
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
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) ? crc32c_armv8 : NULL;
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
