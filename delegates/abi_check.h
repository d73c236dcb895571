// Run-time check that the interpreter we are attached to lays out its structs
// the way tflite_c_abi.h declares them. Without headers from the runtime we
// cannot know its version at compile time; a mismatch would read garbage or,
// worse, pass a wrong-sized TfLiteRegistration by value. So before claiming
// anything the delegate looks at live data for values that only make sense
// in our layout, and refuses to attach, with the reason, if they do not.
//
// What it cannot prove: a layout change that keeps every checked field
// plausible. The checks target the fields we read and the registration size.

#ifndef WBMM_DELEGATES_ABI_CHECK_H_
#define WBMM_DELEGATES_ABI_CHECK_H_

#include <string>

#include "tflite_c_abi.h"

namespace wbmm {

// "" when the context looks like our layout, else the first thing that does not.
std::string CheckRuntimeLayout(TfLiteContext* context);

}  // namespace wbmm

#endif  // WBMM_DELEGATES_ABI_CHECK_H_
