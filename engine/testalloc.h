/*
 * testalloc.h -- for tests: a protobuf-c allocator whose blocks are all
 * freed together, as the engine's decoding arena frees them (wire.c frees
 * nothing one by one). Header-only, like tap.h.
 *
 *   block *blocks = NULL;
 *   ProtobufCAllocator a = { t_alloc, t_free, &blocks };
 *   ... decode with &a ...
 *   t_release(&blocks);
 */
#ifndef WL_TESTALLOC_H
#define WL_TESTALLOC_H

#include <stddef.h>
#include <stdlib.h>

typedef struct block block;
struct block {
	block *next;
	max_align_t data[];
};

static void *
t_alloc(void *d, size_t n)
{
	block **head = d, *b = malloc(sizeof(*b) + n);

	if (b == NULL)
		return NULL;
	b->next = *head;
	*head = b;
	return b->data;
}

static void
t_free(void *d, void *p)
{
	(void)d;
	(void)p;
}

static void
t_release(block **head)
{
	while (*head) {
		block *n = (*head)->next;
		free(*head);
		*head = n;
	}
}

#endif
