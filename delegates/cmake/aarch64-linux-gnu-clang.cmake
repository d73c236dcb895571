# Cross build for aarch64 Linux with clang, the compiler family of the Android
# NDK: the closest this machine gets to the phone build, whose toolchain file
# ships only with the NDK. Everything but the compiler comes from the GCC
# toolchain file: headers, crt files and libstdc++ from Debian's
# g++-aarch64-linux-gnu, qemu to run the tests (make delegate-arm64-clang-test).
# It catches what GCC accepts and clang does not (a GCC-only flag once broke
# the NDK build) and compiles the NEON kernels the way a phone build does.
include(${CMAKE_CURRENT_LIST_DIR}/aarch64-linux-gnu.cmake)
set(CMAKE_C_COMPILER clang)
set(CMAKE_CXX_COMPILER clang++)
set(CMAKE_C_COMPILER_TARGET aarch64-linux-gnu)
set(CMAKE_CXX_COMPILER_TARGET aarch64-linux-gnu)
