package imagesource

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// readAtLocal serves ReadAt from the file; p does not go past Size.
func (s *Source) readAtLocal(p []byte, off int64) (int, error) {
	n, err := s.file.ReadAt(p, off)
	s.stats.fetched.Add(int64(n))
	switch {
	case err == nil || (err == io.EOF && n == len(p)):
		return n, nil
	case err == io.EOF:
		return n, fmt.Errorf("read %s: file ended at offset %d, before its size %d: %w", s.url, off+int64(n), s.size, io.ErrUnexpectedEOF)
	default:
		return n, fmt.Errorf("read %s at offset %d: %w", s.url, off, err)
	}
}

// localStream reads a local file from the start, feeding the hash.
type localStream struct {
	s      *Source
	r      *io.SectionReader
	off    int64
	closed bool
}

func (ls *localStream) Read(p []byte) (int, error) {
	if ls.closed {
		return 0, errors.New("read of a closed image stream")
	}
	if err := ls.s.ctx.Err(); err != nil {
		return 0, ls.s.closedErr(err)
	}
	n, err := ls.r.Read(p)
	ls.s.stats.fetched.Add(int64(n))
	ls.s.feed(ls.off, p[:n])
	ls.off += int64(n)
	if err == io.EOF && ls.off < ls.s.size {
		err = fmt.Errorf("read %s: file ended at offset %d, before its size %d: %w", ls.s.url, ls.off, ls.s.size, io.ErrUnexpectedEOF)
	}
	return n, err
}

func (ls *localStream) Close() error {
	ls.closed = true
	return nil
}

// finishLocal hashes the file from the cursor to the end. s.hash.mu is held.
func (s *Source) finishLocal(ctx context.Context) error {
	buf := make([]byte, 1<<20)
	for s.hash.upTo < s.size {
		if err := ctx.Err(); err != nil {
			return err
		}
		off := s.hash.upTo
		want := min(int64(len(buf)), s.size-off)
		n, err := s.file.ReadAt(buf[:want], off)
		s.stats.fetched.Add(int64(n))
		s.feedLocked(off, buf[:n])
		switch {
		case err == nil || (err == io.EOF && int64(n) == want):
		case err == io.EOF:
			return fmt.Errorf("file ended at offset %d, before its size %d: %w", off+int64(n), s.size, io.ErrUnexpectedEOF)
		default:
			return err
		}
	}
	return nil
}
