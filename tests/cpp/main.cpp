// With Catch2 v3 the main comes from Catch2WithMain; v2 needs it defined once.
#if !__has_include(<catch2/catch_test_macros.hpp>)
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
