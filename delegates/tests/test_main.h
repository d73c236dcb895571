// See test_main.cc.
#ifndef WBMM_DELEGATES_TESTS_TEST_MAIN_H_
#define WBMM_DELEGATES_TESTS_TEST_MAIN_H_

#include <cstdint>
#include <cstdio>
#include <vector>

namespace wbmm_test {
struct TestCase {
  const char* name;
  void (*fn)();
};
std::vector<TestCase>& Registry();
int& CurrentFailures();
struct Registrar {
  Registrar(const char* name, void (*fn)()) { Registry().push_back({name, fn}); }
};
// A fixed pseudo-random stream (64-bit LCG), the same on every platform.
struct Rng {
  uint64_t state;
  uint32_t Next() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return uint32_t(state >> 33);
  }
  int Int(int lo, int hi) { return lo + int(Next() % uint32_t(hi - lo + 1)); }
  float Uniform() { return float(Next() % 2000001) / 1000000.0f - 1.0f; }
};
}  // namespace wbmm_test

#define WBMM_TEST(name)                                           \
  static void name();                                             \
  static ::wbmm_test::Registrar name##_registrar(#name, &name);   \
  static void name()

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      ++::wbmm_test::CurrentFailures();                                              \
      std::printf("  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);         \
    }                                                                                \
  } while (0)

#define CHECK_MSG(cond, ...)                                                         \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      ++::wbmm_test::CurrentFailures();                                              \
      std::printf("  %s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);         \
      std::printf(__VA_ARGS__);                                                      \
      std::printf("\n");                                                             \
    }                                                                                \
  } while (0)

#endif  // WBMM_DELEGATES_TESTS_TEST_MAIN_H_
