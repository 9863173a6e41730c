package topics

import (
	"encoding/binary"
	"math/bits"
	"testing"
)

// stringStops finds the first quote, backslash or control byte of a word
// wherever it is and whatever follows it, and nothing in a plain word
// (bytes from 0x20 up, UTF-8's high bytes included).
func TestStringStopsFindsTheFirstStopExactly(t *testing.T) {
	stop := func(c byte) bool { return c == '"' || c == '\\' || c < 0x20 }
	for pos := 0; pos < 8; pos++ {
		for c := 0; c < 256; c++ {
			for _, after := range []byte{'a', '"', 0x00, 0xff, '\\'} {
				var w [8]byte
				for i := range w {
					w[i] = 'a'
					if i > pos {
						w[i] = after
					}
				}
				w[pos] = byte(c)
				want := 8
				for i, b := range w {
					if stop(b) {
						want = i
						break
					}
				}
				got := 8
				if m := stringStops(binary.LittleEndian.Uint64(w[:])); m != 0 {
					got = bits.TrailingZeros64(m) >> 3
				}
				if got != want {
					t.Fatalf("%q: first stop at %d, found %d", w, want, got)
				}
			}
		}
	}
}

func TestStringsOfEveryLengthAndStop(t *testing.T) {
	for n := 0; n < 40; n++ {
		for _, tc := range []struct {
			c     byte
			valid bool
		}{{'x', true}, {0x1f, false}, {0xc3, true}, {'\\', false}} {
			body := make([]byte, 0, n+2)
			body = append(body, '"')
			for i := 0; i < n; i++ {
				body = append(body, 'a')
			}
			if n > 0 {
				body[len(body)-1] = tc.c
			}
			body = append(body, '"')
			want := tc.valid || n == 0
			if tc.c == '\\' && n > 0 { // a lone backslash escapes the closing quote
				want = false
			}
			var s envelopeScan
			s.data = body
			_, ok := s.str()
			if ok != want || (ok && s.i != len(body)) {
				t.Errorf("%q: ok %v at %d, want %v", body, ok, s.i, want)
			}
		}
	}
}
