// See test_main.cc.
#ifndef WBMM_DELEGATES_TESTS_TEST_MAIN_H_
#define WBMM_DELEGATES_TESTS_TEST_MAIN_H_

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
