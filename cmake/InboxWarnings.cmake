# Probe each warning flag and apply the ones the compiler knows, PRIVATE to
# the target (libuv's habit): our warnings never leak into consumers.
include(CheckCCompilerFlag)

set(INBOX_WARNING_CANDIDATES
    -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
    -Wpointer-arith -Wvla -Wformat=2 -Wundef -Wcast-align -Wwrite-strings
    -Wimplicit-fallthrough -Wno-unused-parameter)

set(INBOX_WARNINGS "")
foreach(flag ${INBOX_WARNING_CANDIDATES})
  string(MAKE_C_IDENTIFIER "HAS${flag}" var)
  check_c_compiler_flag(${flag} ${var})
  if(${var})
    list(APPEND INBOX_WARNINGS ${flag})
  endif()
endforeach()

function(inbox_warnings target)
  target_compile_options(${target} PRIVATE ${INBOX_WARNINGS})
endfunction()

# inbox_test(name SOURCES a.c b.c LIBS x y [TIMEOUT s] [ARGS ...])
# One executable and one add_test per test binary.
function(inbox_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;ARGS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  inbox_warnings(${name})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/lib)
  add_test(NAME ${name} COMMAND ${name} ${T_ARGS})
  if(T_TIMEOUT)
    set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT})
  else()
    set_tests_properties(${name} PROPERTIES TIMEOUT 600)
  endif()
endfunction()
