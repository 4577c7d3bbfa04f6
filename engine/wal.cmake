# engine/wal: the node-wide write-ahead log and its file layer (vfs).
add_library(inbox_wal STATIC
  ${CMAKE_CURRENT_LIST_DIR}/wal.c
  ${CMAKE_CURRENT_LIST_DIR}/vfs.c)
target_include_directories(inbox_wal PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(inbox_wal PUBLIC PkgConfig::XXHASH Threads::Threads
                      inbox_headers)
inbox_warnings(inbox_wal)
