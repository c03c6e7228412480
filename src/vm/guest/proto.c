/*
 * Byte buffers and the TLV encoding used inside frame payloads. Pure helpers: no I/O. A malformed
 * TLV is reported to the caller, never read past its payload.
 */
#include <stdlib.h>
#include <string.h>

#include "agent.h"

void buf_append(struct buf *b, const void *p, size_t n) {
  if (n == 0) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) abort();
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

void buf_consume(struct buf *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void buf_free(struct buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

int tlv_next(struct tlv_iter *it, uint8_t *key, const uint8_t **val, uint32_t *len) {
  if (it->left == 0) return 0;
  if (it->left < 5) return -1;
  uint32_t l = be32(it->p + 1);
  if (l > it->left - 5) return -1;
  *key = it->p[0];
  *len = l;
  *val = it->p + 5;
  it->p += 5 + l;
  it->left -= 5 + l;
  return 1;
}

void tlv_put(struct buf *b, uint8_t key, const void *val, uint32_t len) {
  uint8_t h[5];
  h[0] = key;
  put_be32(h + 1, len);
  buf_append(b, h, 5);
  buf_append(b, val, len);
}

void tlv_put_u32(struct buf *b, uint8_t key, uint32_t v) {
  uint8_t p[4];
  put_be32(p, v);
  tlv_put(b, key, p, 4);
}
