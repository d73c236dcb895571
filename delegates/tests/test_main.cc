// A minimal test runner for the delegate's C++ unit tests (no gtest: the
// cross build for aarch64 must need nothing but the compiler). Tests register
// themselves with WBMM_TEST; CHECK failures are counted and printed; the exit
// code is the number of failed tests. Pass a substring to run a subset.
#include "test_main.h"

#include <cstdio>
#include <cstring>

namespace wbmm_test {

std::vector<TestCase>& Registry() {
  static std::vector<TestCase> tests;
  return tests;
}

int& CurrentFailures() {
  static int failures = 0;
  return failures;
}

}  // namespace wbmm_test

int main(int argc, char** argv) {
  using namespace wbmm_test;
  int failed = 0, ran = 0;
  for (const TestCase& test : Registry()) {
    if (argc > 1 && std::strstr(test.name, argv[1]) == nullptr) continue;
    CurrentFailures() = 0;
    test.fn();
    ++ran;
    const bool ok = CurrentFailures() == 0;
    std::printf("[%s] %s\n", ok ? "PASS" : "FAIL", test.name);
    failed += ok ? 0 : 1;
  }
  std::printf("%d tests, %d failed\n", ran, failed);
  return failed == 0 && ran > 0 ? 0 : 1;
}
