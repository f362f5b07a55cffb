// Package capture owns the bytes a run prints: web2py's `!clear!` rule and
// the numbered chunks they are sent in.
//
// A Buffer is fed raw bytes (a command's stdout and stderr pipes, or a Go
// handler writing to worker.Output) and cut into chunks with seq 1, 2, 3...
// per run. Only the text after the LAST `!clear!` marker survives, even when
// a marker is split across two writes; the chunk carrying the effect of a
// marker has Clear set. Text is sent as valid UTF-8 (protobuf strings must
// be): a multi-byte character split across two writes is held back until it
// completes, and invalid bytes become U+FFFD.
//
// Nothing here knows about gRPC or processes, so it is unit-tested directly.
package capture

import (
	"strings"
	"sync"
	"unicode/utf8"
)

// ClearMarker is what a task prints to discard everything it printed before.
const ClearMarker = "!clear!"

// DefaultMaxChunkBytes bounds Chunk.Data, keeping a chunk well under gRPC's
// 4 MB message limit.
const DefaultMaxChunkBytes = 256 * 1024

// Chunk is one numbered slice of a run's output, as sent in an OutputChunk.
type Chunk struct {
	Seq   int64  // 1 for the first chunk of a run, then +1 per chunk
	Data  string // valid UTF-8
	Clear bool   // everything before this chunk must be discarded
}

// Buffer is the not-yet-sent output of one run, with its chunk numbering.
// It is an io.Writer; writers and the taker may be different goroutines.
type Buffer struct {
	mu       sync.Mutex
	pending  strings.Builder
	clear    bool
	tail     string // last len(marker)-1 bytes seen, to catch a split marker
	carry    []byte // an incomplete UTF-8 sequence at the end of the last Write
	nextSeq  int64
	maxChunk int
	closed   bool
}

// Stream is a second writer into a Buffer with its own UTF-8 state, for a
// source written concurrently with others (a command's stderr beside its
// stdout), so a character split in one stream is not cut by another's bytes.
type Stream struct {
	b     *Buffer
	carry []byte // under b.mu
}

// NewBuffer returns an empty buffer whose first chunk will have seq 1.
func NewBuffer() *Buffer {
	return &Buffer{nextSeq: 1, maxChunk: DefaultMaxChunkBytes}
}

// NewStream returns a writer into b; call its Flush before the final Take.
func (b *Buffer) NewStream() *Stream { return &Stream{b: b} }

// Write adds raw bytes from this stream; it never fails.
func (s *Stream) Write(p []byte) (int, error) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.carry = s.b.writeLocked(s.carry, p)
	return len(p), nil
}

// Flush adds an incomplete character left at the end of the stream (as U+FFFD).
func (s *Stream) Flush() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if len(s.carry) > 0 && !s.b.closed {
		s.b.feedLocked(strings.ToValidUTF8(string(s.carry), "\uFFFD"))
	}
	s.carry = nil
}

// SetMaxChunkBytes changes the longest chunk (tests use tiny limits).
func (b *Buffer) SetMaxChunkBytes(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.maxChunk = max(n, utf8.UTFMax)
}

// Write adds raw output bytes; it never fails. After Close it discards them,
// so a handler goroutine abandoned after a timeout cannot grow the buffer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.carry = b.writeLocked(b.carry, p)
	return len(p), nil
}

// writeLocked feeds carry+p up to the last complete character and returns
// the new carry.
func (b *Buffer) writeLocked(carry, p []byte) []byte {
	if b.closed || len(p) == 0 {
		return carry
	}
	data := append(carry, p...)
	cut := completeUpTo(data)
	b.feedLocked(strings.ToValidUTF8(string(data[:cut]), "\uFFFD"))
	return append([]byte(nil), data[cut:]...)
}

// Close makes later writes no-ops; what was written stays takeable.
func (b *Buffer) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
}

// HasPending reports whether Take(false) could return a chunk.
func (b *Buffer) HasPending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending.Len() > 0 || b.clear
}

// NextSeq is the seq the next chunk will carry.
func (b *Buffer) NextSeq() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nextSeq
}

func (b *Buffer) feedLocked(text string) {
	if text == "" {
		return
	}
	probe := b.tail + text
	if i := strings.LastIndex(probe, ClearMarker); i >= 0 {
		// The marker ends inside text (the tail is shorter than the marker),
		// so what follows it is a suffix of text.
		b.pending.Reset()
		b.pending.WriteString(probe[i+len(ClearMarker):])
		b.clear = true
	} else {
		b.pending.WriteString(text)
	}
	if len(probe) > len(ClearMarker)-1 {
		probe = probe[len(probe)-(len(ClearMarker)-1):]
	}
	b.tail = probe
}

// Take returns the pending output as chunks with consecutive seq numbers
// and forgets it; the first carries Clear when a marker was seen since the
// previous Take. final says the run has ended: everything is flushed,
// including an incomplete character and a trailing partial marker that can
// no longer complete (a live Take holds those back).
func (b *Buffer) Take(final bool) []Chunk {
	b.mu.Lock()
	defer b.mu.Unlock()
	if final && len(b.carry) > 0 {
		b.feedLocked(strings.ToValidUTF8(string(b.carry), "\uFFFD"))
		b.carry = nil
	}
	if b.pending.Len() == 0 && !b.clear {
		return nil
	}
	text := b.pending.String()
	held := ""
	if !final {
		held = text[len(text)-PartialMarkerLen(text):]
		text = text[:len(text)-len(held)]
		if text == "" && !b.clear {
			return nil
		}
	}
	b.pending.Reset()
	b.pending.WriteString(held)
	var chunks []Chunk
	for i, piece := range Split(text, b.maxChunk) {
		chunks = append(chunks, Chunk{Seq: b.nextSeq, Data: piece, Clear: b.clear && i == 0})
		b.nextSeq++
	}
	b.clear = false
	return chunks
}

// PartialMarkerLen is the length of the longest suffix of text that is a
// proper prefix of the marker: it may become a marker with the next write.
func PartialMarkerLen(text string) int {
	for n := min(len(ClearMarker)-1, len(text)); n > 0; n-- {
		if strings.HasSuffix(text, ClearMarker[:n]) {
			return n
		}
	}
	return 0
}

// Split cuts text into pieces of at most maxBytes bytes, never inside a
// UTF-8 character; it always returns at least one piece.
func Split(text string, maxBytes int) []string {
	if len(text) <= maxBytes {
		return []string{text}
	}
	var pieces []string
	for len(text) > maxBytes {
		cut := maxBytes
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		if cut == 0 {
			cut = maxBytes
		}
		pieces = append(pieces, text[:cut])
		text = text[cut:]
	}
	if text != "" {
		pieces = append(pieces, text)
	}
	return pieces
}

// Join applies chunks in order as the coordinator does: a Clear chunk
// drops everything before it.
func Join(chunks []Chunk) string {
	var out strings.Builder
	for _, c := range chunks {
		if c.Clear {
			out.Reset()
		}
		out.WriteString(c.Data)
	}
	return out.String()
}

// completeUpTo returns how many leading bytes of data end on a character
// boundary: a trailing incomplete (but so far valid) UTF-8 sequence is left
// for the next write.
func completeUpTo(data []byte) int {
	for back := 1; back <= utf8.UTFMax-1 && back <= len(data); back++ {
		i := len(data) - back
		if utf8.RuneStart(data[i]) {
			if data[i] >= utf8.RuneSelf && !utf8.FullRune(data[i:]) {
				return i
			}
			return len(data)
		}
	}
	return len(data)
}
