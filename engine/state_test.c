/* state_test.c -- the state store: creation on first sight, replacement,
 * deletion, separation of state ids, growth past many keys. */
#include <stdio.h>
#include <string.h>

#include "state.h"
#include "tap.h"

int
main(void)
{
	wl_state *s;
	wl_state_entry *e, *e2;
	char key[32];
	int ok = 1;

	TAP_OK(wl_state_new(&s) == WL_OK, "new store");
	TAP_OK(wl_state_get(s, 1, "IBM", 3, false) == NULL,
	    "an unknown key is absent when not created");
	e = wl_state_get(s, 1, "IBM", 3, true);
	TAP_OK(e != NULL && !e->present && e->locked_by == 0,
	    "a new key has an entry with no state");
	TAP_OK(wl_state_get(s, 1, "IBM", 3, true) == e,
	    "the same key finds the same entry");
	e2 = wl_state_get(s, 2, "IBM", 3, true);
	TAP_OK(e2 != NULL && e2 != e, "another state id is another entry");
	TAP_OK(wl_state_set(s, e, "v1", 2, true) == WL_OK && e->present &&
	    e->vlen == 2 && memcmp(e->value, "v1", 2) == 0, "set a value");
	TAP_OK(wl_state_set(s, e, "value2", 6, true) == WL_OK &&
	    e->vlen == 6 && memcmp(e->value, "value2", 6) == 0,
	    "replace the value");
	TAP_OK(wl_state_bytes(s) == 3 + 3 + 6, "bytes count keys and values "
	    "(%zu)", wl_state_bytes(s));
	TAP_OK(wl_state_set(s, e, NULL, 0, false) == WL_OK && !e->present &&
	    e->vlen == 0, "delete the value");
	TAP_OK(wl_state_set(s, e, "", 0, true) == WL_OK && e->present &&
	    e->vlen == 0, "an empty value is present");
	e2 = wl_state_get(s, 1, NULL, 0, true);
	TAP_OK(e2 != NULL && e2 != e && e2->klen == 0,
	    "the empty key, given as NULL, has an entry of its own");
	TAP_OK(wl_state_get(s, 1, "", 0, false) == e2 &&
	    wl_state_get(s, 1, NULL, 0, false) == e2,
	    "the empty key is found again, as \"\" or NULL");
	for (int i = 0; i < 100000; i++) {
		int n = snprintf(key, sizeof(key), "word-%d", i);
		wl_state_entry *w = wl_state_get(s, 3, key, (uint32_t)n, true);
		if (w == NULL || wl_state_set(s, w, &i, sizeof(i), true) != WL_OK)
			ok = 0;
	}
	for (int i = 0; i < 100000 && ok; i++) {
		int n = snprintf(key, sizeof(key), "word-%d", i);
		wl_state_entry *w = wl_state_get(s, 3, key, (uint32_t)n, false);
		if (w == NULL || w->vlen != sizeof(i) ||
		    memcmp(w->value, &i, sizeof(i)) != 0)
			ok = 0;
	}
	TAP_OK(ok, "100000 dynamic keys survive the table growing");
	TAP_OK(wl_state_count(s) == 100003, "count is %zu", wl_state_count(s));
	TAP_OK(wl_state_get(s, 1, "IBM", 3, false) == e,
	    "entries keep their address across growth");
	wl_state_free(s);
	wl_state_free(NULL);
	TAP_OK(1, "free accepts NULL");
	return TAP_DONE();
}
