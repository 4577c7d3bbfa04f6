# net/transport.cmake — inbox_transport: the server side of the client
# protocol on libuv (transport.c: TLS, framing, HELLO, roles, bounds, the
# hand-off to the node) and the plaintext GET /metrics listener
# (http_metrics.c), and the sending side of node-to-node Raft traffic
# (peer.c: one outgoing TLS link per peer). Included from
# net/CMakeLists.txt; see docs/transport.md.
add_library(inbox_transport STATIC
  ${CMAKE_CURRENT_LIST_DIR}/transport.c
  ${CMAKE_CURRENT_LIST_DIR}/http_metrics.c
  ${CMAKE_CURRENT_LIST_DIR}/peer.c)
inbox_warnings(inbox_transport)
# Headers are included as "net/transport.h", "server/metrics.h", ...
target_include_directories(inbox_transport PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(inbox_transport
  PUBLIC inbox_codec inbox_tls inbox_metrics PkgConfig::LIBUV Threads::Threads
  PRIVATE inbox_log)
