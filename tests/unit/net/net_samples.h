/*
 * net_samples.h — one sample message of every body layout of the protocol,
 * shared by the codec tests (round trip, streams, mutations, the worked
 * examples of docs/protocol.md) and the fuzz corpus generator.
 */
#ifndef INBOX_TESTS_NET_SAMPLES_H
#define INBOX_TESTS_NET_SAMPLES_H

#include <stddef.h>

#include "codec.h"

struct net_sample {
    const char *name; /* stable: names corpus files and doc examples */
    struct inbox_msg msg;
};

/* Fills the samples (static storage, built once) and returns them. */
const struct net_sample *net_samples(size_t *count);

/* The sample called `name`, or NULL. */
const struct net_sample *net_sample_find(const char *name);

#endif /* INBOX_TESTS_NET_SAMPLES_H */
