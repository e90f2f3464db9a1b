package api

import (
	json "github.com/goccy/go-json"
	"strconv"
	"unicode/utf8"
)

// objWriter appends one JSON object field by field, in the order written.
// Node lists are the API's hot path: writing the node's ~60 top-level
// fields directly avoids building and key-sorting a map per node (the
// reflection-heavy part of encoding/json), while the free-form objects
// inside (driver_info, properties, ...) still go through encoding/json.
type objWriter struct {
	buf   []byte
	first bool
}

func newObjWriter(capacity int) *objWriter {
	return &objWriter{buf: append(make([]byte, 0, capacity), '{'), first: true}
}

func (w *objWriter) key(k string) {
	if !w.first {
		w.buf = append(w.buf, ',')
	}
	w.first = false
	w.buf = appendJSONString(w.buf, k)
	w.buf = append(w.buf, ':')
}

// field writes "k": v. Strings, nil, bools and ints are written directly;
// anything else is marshalled.
func (w *objWriter) field(k string, v any) {
	w.key(k)
	switch x := v.(type) {
	case nil:
		w.buf = append(w.buf, "null"...)
	case string:
		w.buf = appendJSONString(w.buf, x)
	case bool:
		w.buf = strconv.AppendBool(w.buf, x)
	case int:
		w.buf = strconv.AppendInt(w.buf, int64(x), 10)
	case json.RawMessage:
		w.buf = append(w.buf, x...)
	case map[string]any:
		if len(x) == 0 {
			w.buf = append(w.buf, "{}"...)
			return
		}
		w.marshal(x)
	case []link:
		w.buf = append(w.buf, '[')
		for i, l := range x {
			if i > 0 {
				w.buf = append(w.buf, ',')
			}
			w.buf = append(w.buf, `{"href":`...)
			w.buf = appendJSONString(w.buf, l.Href)
			w.buf = append(w.buf, `,"rel":`...)
			w.buf = appendJSONString(w.buf, l.Rel)
			w.buf = append(w.buf, '}')
		}
		w.buf = append(w.buf, ']')
	default:
		w.marshal(x)
	}
}

func (w *objWriter) marshal(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte("null")
	}
	w.buf = append(w.buf, b...)
}

func (w *objWriter) bytes() json.RawMessage { return append(w.buf, '}') }

// appendJSONString appends s as a JSON string, escaping like encoding/json
// (including <, > and & for HTML safety, and invalid UTF-8 as U+FFFD).
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
