/* A stand-in bcryptprimitives.dll, for running Windows test binaries under Wine only.
 * Rust's std imports ProcessPrng from bcryptprimitives.dll (its random source for HashMap keys
 * and the like); Wine 8 has no such DLL, so every Rust program fails to start under it
 * ("Library bcryptprimitives.dll ... not found", status c0000135). This one exports ProcessPrng
 * and fills the buffer with RtlGenRandom (advapi32's SystemFunction036). scripts/lib/windows.sh
 * builds it into the Wine prefix's system32:
 *   x86_64-w64-mingw32-gcc -shared -o bcryptprimitives.dll bcryptprimitives.c bcryptprimitives.def -ladvapi32
 */
#include <windows.h>
#include <ntsecapi.h>
#include <limits.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* RtlGenRandom takes a ULONG length (32 bits on Windows): larger buffers go in chunks. */
    while (len > 0) {
        ULONG chunk = len > ULONG_MAX ? ULONG_MAX : (ULONG)len;
        if (!RtlGenRandom(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
