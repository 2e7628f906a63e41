# Cross build for 64-bit Arm Linux with Debian's gcc-aarch64-linux-gnu,
# against a sysroot of Debian's arm64 packages (scripts/cross-arm64.sh
# makes it; docs/arm64.md). TSR_SYSROOT names it, from the cache or the
# environment. Tests run under qemu-aarch64-static with that sysroot as
# the guest's root; QEMU_CPU in the environment picks the emulated CPU.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

if(NOT TSR_SYSROOT)
  set(TSR_SYSROOT "$ENV{TSR_SYSROOT}")
endif()
if(NOT TSR_SYSROOT OR NOT EXISTS "${TSR_SYSROOT}/usr/lib/aarch64-linux-gnu")
  message(FATAL_ERROR "TSR_SYSROOT must name an arm64 sysroot (scripts/cross-arm64.sh sysroot makes one)")
endif()
set(TSR_SYSROOT "${TSR_SYSROOT}" CACHE PATH "arm64 sysroot of Debian packages")
# try_compile projects re-read this file: hand them the sysroot too.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES TSR_SYSROOT)
set(CMAKE_SYSROOT "${TSR_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH "${TSR_SYSROOT}")
# Programs (protoc-c) run here; headers, libraries and CMake packages
# come from the sysroot.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(ENV{PKG_CONFIG_LIBDIR} "${TSR_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${TSR_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${TSR_SYSROOT}")

set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static -L "${TSR_SYSROOT}")
