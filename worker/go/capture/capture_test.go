package capture

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func feed(b *Buffer, parts ...string) {
	for _, p := range parts {
		_, _ = b.Write([]byte(p))
	}
}

func TestChunksAreNumberedFromOne(t *testing.T) {
	b := NewBuffer()
	feed(b, "a\n")
	first := b.Take(false)
	feed(b, "b\n")
	second := b.Take(false)
	feed(b, "c\n")
	last := b.Take(true)
	all := append(append(first, second...), last...)
	for i, c := range all {
		if c.Seq != int64(i+1) {
			t.Fatalf("chunk %d has seq %d", i, c.Seq)
		}
		if c.Clear {
			t.Fatalf("chunk %d is a clear chunk", i)
		}
	}
	if got := Join(all); got != "a\nb\nc\n" {
		t.Fatalf("joined %q", got)
	}
	if b.Take(true) != nil {
		t.Fatal("a second final take returned chunks")
	}
}

func TestOnlyTextAfterLastMarkerSurvives(t *testing.T) {
	b := NewBuffer()
	feed(b, "a\n", "!clear!b\n", "c!clear!d\n")
	chunks := b.Take(true)
	if len(chunks) != 1 || !chunks[0].Clear || chunks[0].Data != "d\n" || chunks[0].Seq != 1 {
		t.Fatalf("got %+v", chunks)
	}
}

func TestMarkerSplitAcrossWritesIsFound(t *testing.T) {
	for cut := 1; cut < len(ClearMarker); cut++ {
		b := NewBuffer()
		feed(b, "50%\n"+ClearMarker[:cut])
		live := b.Take(false)
		if Join(live) != "50%\n" {
			t.Fatalf("cut %d: live output %q (a partial marker must be held back)", cut, Join(live))
		}
		feed(b, ClearMarker[cut:]+"100%\n")
		rest := b.Take(true)
		if len(rest) != 1 || !rest[0].Clear || rest[0].Data != "100%\n" || rest[0].Seq != 2 {
			t.Fatalf("cut %d: got %+v", cut, rest)
		}
		if got := Join(append(live, rest...)); got != "100%\n" {
			t.Fatalf("cut %d: joined %q", cut, got)
		}
	}
}

func TestMarkerSplitOneByteAtATime(t *testing.T) {
	b := NewBuffer()
	var chunks []Chunk
	for _, c := range []byte("x!clear!y") {
		feed(b, string(c))
		chunks = append(chunks, b.Take(false)...)
	}
	chunks = append(chunks, b.Take(true)...)
	if got := Join(chunks); got != "y" {
		t.Fatalf("joined %q from %+v", got, chunks)
	}
}

func TestPartialMarkerAtEndIsFlushedWhenFinal(t *testing.T) {
	b := NewBuffer()
	feed(b, "done !cle")
	if got := Join(b.Take(false)); got != "done " {
		t.Fatalf("live %q", got)
	}
	if got := b.Take(true); len(got) != 1 || got[0].Data != "!cle" {
		t.Fatalf("final %+v", got)
	}
}

func TestClearWithNothingAfterStillSendsAClearChunk(t *testing.T) {
	b := NewBuffer()
	feed(b, "old")
	_ = b.Take(false)
	feed(b, "!clear!")
	got := b.Take(false)
	if len(got) != 1 || !got[0].Clear || got[0].Data != "" || got[0].Seq != 2 {
		t.Fatalf("got %+v", got)
	}
}

func TestSplitUTF8CharacterIsHeldUntilComplete(t *testing.T) {
	b := NewBuffer()
	euro := []byte("€") // 3 bytes
	_, _ = b.Write(append([]byte("a"), euro[:1]...))
	first := b.Take(false)
	_, _ = b.Write(euro[1:])
	second := b.Take(true)
	all := append(first, second...)
	if Join(all) != "a€" {
		t.Fatalf("joined %q", Join(all))
	}
	for _, c := range all {
		if !utf8.ValidString(c.Data) {
			t.Fatalf("invalid UTF-8 in %+v", c)
		}
	}
}

func TestInvalidBytesBecomeReplacementCharacters(t *testing.T) {
	b := NewBuffer()
	_, _ = b.Write([]byte{'a', 0xff, 'b', 0xe2, 0x82})
	got := Join(b.Take(true))
	if !utf8.ValidString(got) || !strings.HasPrefix(got, "a\uFFFDb") || !strings.HasSuffix(got, "\uFFFD") {
		t.Fatalf("got %q", got)
	}
}

func TestLongOutputIsCutIntoBoundedChunks(t *testing.T) {
	b := NewBuffer()
	b.SetMaxChunkBytes(10)
	feed(b, strings.Repeat("é", 12)) // 24 bytes
	chunks := b.Take(true)
	if len(chunks) < 3 {
		t.Fatalf("got %d chunks", len(chunks))
	}
	for i, c := range chunks {
		if len(c.Data) > 10 || !utf8.ValidString(c.Data) || c.Seq != int64(i+1) {
			t.Fatalf("bad chunk %+v", c)
		}
	}
	if Join(chunks) != strings.Repeat("é", 12) {
		t.Fatal("text lost")
	}
}

func TestWritesAfterCloseAreDropped(t *testing.T) {
	b := NewBuffer()
	feed(b, "kept")
	b.Close()
	feed(b, "dropped")
	if got := Join(b.Take(true)); got != "kept" {
		t.Fatalf("got %q", got)
	}
}

func TestPartialMarkerLen(t *testing.T) {
	cases := map[string]int{"": 0, "abc": 0, "a!": 1, "!cl": 3, "x!clear": 6, "!clear!x": 0}
	for text, want := range cases {
		if got := PartialMarkerLen(text); got != want {
			t.Errorf("PartialMarkerLen(%q) = %d, want %d", text, got, want)
		}
	}
}

func TestStreamsKeepTheirOwnPartialCharacters(t *testing.T) {
	b := NewBuffer()
	errs := b.NewStream()
	euro := []byte("€")
	_, _ = b.Write(euro[:2])
	_, _ = errs.Write([]byte("E"))
	_, _ = b.Write(euro[2:])
	errs.Flush()
	if got := Join(b.Take(true)); got != "E€" {
		t.Fatalf("got %q", got)
	}
}
