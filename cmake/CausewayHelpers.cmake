# Helpers shared by every CMakeLists in the tree.

# cw_unit_test(NAME SOURCES... LIBS ...): a cmocka test binary registered with
# ctest under NAME, with a timeout so no test can hang the suite.
function(cw_unit_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 60)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS unit)
endfunction()

# cw_py_test(NAME FILE [TIMEOUT s]): a pytest file run on Debian's python3
# against the binaries of this build.
function(cw_py_test name file)
  cmake_parse_arguments(T "" "TIMEOUT" "" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_test(NAME ${name}
           COMMAND ${CW_PYTHON} -m pytest -q -p no:cacheprovider ${file})
  set_tests_properties(${name} PROPERTIES
    TIMEOUT ${T_TIMEOUT} LABELS e2e
    ENVIRONMENT "CW_BUILD_DIR=${CMAKE_BINARY_DIR};CW_SOURCE_DIR=${CMAKE_SOURCE_DIR};PYTHONDONTWRITEBYTECODE=1")
endfunction()
