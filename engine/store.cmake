# engine/store: the command codec (libc only) and the inbox state machine on
# LMDB. Included by engine/CMakeLists.txt.
add_library(inbox_command STATIC ${CMAKE_CURRENT_LIST_DIR}/command.c)
target_include_directories(inbox_command PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(inbox_command PUBLIC inbox_headers)
inbox_warnings(inbox_command)

add_library(inbox_store STATIC ${CMAKE_CURRENT_LIST_DIR}/store.c)
target_include_directories(inbox_store PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(inbox_store PUBLIC inbox_command
                      PRIVATE PkgConfig::LMDB PkgConfig::XXHASH)
inbox_warnings(inbox_store)
