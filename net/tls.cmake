# net/tls.cmake — inbox_tls: mutual TLS 1.3 over OpenSSL memory BIOs
# (tls.c, a pure byte pump: no sockets, no libuv) and the cluster's
# certificate tooling (cert.c: CA, node / admin / frontend certificates).
# Included from net/CMakeLists.txt; see docs/security.md.
add_library(inbox_tls STATIC
  ${CMAKE_CURRENT_LIST_DIR}/tls.c
  ${CMAKE_CURRENT_LIST_DIR}/cert.c)
inbox_warnings(inbox_tls)
# Headers are included as "net/tls.h" and "net/cert.h".
target_include_directories(inbox_tls PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(inbox_tls PUBLIC PkgConfig::OPENSSL inbox_headers)
