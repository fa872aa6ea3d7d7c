/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fuzz_proto.c - libFuzzer target for the wire codec (lib/proto.c).
 *
 * The input is a byte stream as a hostile guest would write it to the
 * port.  Its first byte picks how the stream is cut into reads (1..16
 * bytes, or all at once), the rest is fed to the stream decoder; every
 * whole frame goes through proto_decode().  A frame that decodes is encoded
 * again and must come out byte for byte the same (the encoding is
 * canonical: reserved fields, padding and unused histogram slots are zero),
 * so a decoder that accepts something the encoder would not write aborts.
 * The whole input is also handed to proto_decode_buf() as one frame.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmdefrag/proto.h"

static struct proto_decoder dec;
static struct proto_msg msg;
static uint8_t out[PROTO_MAX_FRAME];

static void fuzz_check_frame(const struct proto_frame *f)
{
	size_t len = 0;

	if (proto_decode(f, &msg) != 0)
		return;
	if (proto_encode(&msg, out, sizeof(out), &len) != 0)
		abort();
	if (len != PROTO_HDR_SIZE + f->len ||
	    memcmp(out + PROTO_HDR_SIZE, f->payload, f->len) != 0)
		abort();
	(void)proto_type_name(msg.type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_frame f;
	size_t chunk, off = 1;
	int r = 0;

	if (size == 0)
		return 0;
	chunk = data[0] & 0x0f ? data[0] & 0x0f : size;

	proto_decoder_init(&dec);
	while (off < size && r >= 0) {
		size_t n = size - off < chunk ? size - off : chunk;
		size_t took = proto_decoder_feed(&dec, data + off, n);

		off += took;
		while ((r = proto_decoder_next(&dec, &f)) == 1)
			fuzz_check_frame(&f);
		if (took == 0 && r == 0)
			abort();	/* the decoder must make progress */
	}

	(void)proto_decode_buf(data + 1, size - 1, &msg);
	return 0;
}
