package main

// CloudEvents 1.0 over HTTP: binary and structured content mode in, binary mode out.

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// Event is a CloudEvent.
type Event struct {
	ID              string
	Source          string
	Type            string
	SpecVersion     string
	DataContentType string
	DataSchema      string
	Subject         string
	Time            string
	// Extension attributes: lower-case names, values as text.
	Extensions map[string]string
	// The data's bytes: JSON text when DataContentType is JSON.
	Data []byte
}

// NewEvent is an event of type typ from source, with a fresh id.
func NewEvent(typ, source string) Event {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return Event{ID: hex.EncodeToString(id), Source: source, Type: typ, SpecVersion: "1.0"}
}

func isJSON(contentType string) bool {
	if contentType == "" {
		return true
	}
	media, _, _ := mime.ParseMediaType(contentType)
	return media == "application/json" || media == "text/json" || strings.HasSuffix(media, "+json")
}

func (e *Event) set(name, value string) {
	switch name {
	case "id":
		e.ID = value
	case "source":
		e.Source = value
	case "type":
		e.Type = value
	case "specversion":
		e.SpecVersion = value
	case "datacontenttype":
		e.DataContentType = value
	case "dataschema":
		e.DataSchema = value
	case "subject":
		e.Subject = value
	case "time":
		e.Time = value
	default:
		if e.Extensions == nil {
			e.Extensions = map[string]string{}
		}
		e.Extensions[name] = value
	}
}

// FromHTTP reads the event of a request.
func FromHTTP(r *http.Request) (Event, error) {
	var event Event
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return event, err
	}
	contentType := r.Header.Get("Content-Type")
	media, _, _ := mime.ParseMediaType(contentType)
	switch {
	case media == "application/cloudevents-batch+json":
		return event, errors.New("batched content mode is not supported: send one event per request")
	case strings.HasPrefix(media, "application/cloudevents"):
		var document map[string]json.RawMessage
		if err := json.Unmarshal(body, &document); err != nil {
			return event, fmt.Errorf("the body is not a JSON event: %w", err)
		}
		for name, raw := range document {
			var text string
			isString := json.Unmarshal(raw, &text) == nil
			switch {
			case name == "data" || name == "data_base64":
			case isString:
				event.set(name, text)
			default:
				event.set(name, string(raw))
			}
		}
		if raw, ok := document["data_base64"]; ok {
			var text string
			if err := json.Unmarshal(raw, &text); err != nil {
				return event, errors.New("data_base64 is not a string")
			}
			if event.Data, err = base64.StdEncoding.DecodeString(text); err != nil {
				return event, errors.New("data_base64 is not base64")
			}
		} else if raw, ok := document["data"]; ok {
			var text string
			if !isJSON(event.DataContentType) && json.Unmarshal(raw, &text) == nil {
				event.Data = []byte(text)
			} else {
				event.Data = raw
			}
		}
	default:
		for name, values := range r.Header {
			name = strings.ToLower(name)
			if strings.HasPrefix(name, "ce-") && len(values) > 0 {
				value, err := url.PathUnescape(values[0])
				if err != nil {
					value = values[0]
				}
				event.set(strings.TrimPrefix(name, "ce-"), value)
			}
		}
		event.DataContentType = contentType
		event.Data = body
	}
	var missing []string
	for _, a := range [][2]string{{"specversion", event.SpecVersion}, {"id", event.ID}, {"source", event.Source}, {"type", event.Type}} {
		if a[1] == "" {
			missing = append(missing, a[0])
		}
	}
	if len(missing) > 0 {
		return event, fmt.Errorf("not a CloudEvent: missing %s", strings.Join(missing, ", "))
	}
	if event.SpecVersion != "1.0" {
		return event, fmt.Errorf("specversion %q is not supported (1.0 is)", event.SpecVersion)
	}
	return event, nil
}

// headerValue percent-encodes space, '"', '%' and what is not printable ASCII.
func headerValue(value string) string {
	var out strings.Builder
	for _, b := range []byte(value) {
		if b > ' ' && b <= '~' && b != '"' && b != '%' {
			out.WriteByte(b)
		} else {
			fmt.Fprintf(&out, "%%%02X", b)
		}
	}
	return out.String()
}

// WriteHTTP writes event as a binary-mode response (200).
func WriteHTTP(w http.ResponseWriter, event Event) {
	if event.ID == "" {
		event.ID = NewEvent("", "").ID
	}
	if event.SpecVersion == "" {
		event.SpecVersion = "1.0"
	}
	header := w.Header()
	attributes := map[string]string{
		"specversion": event.SpecVersion, "id": event.ID, "source": event.Source, "type": event.Type,
		"dataschema": event.DataSchema, "subject": event.Subject, "time": event.Time,
	}
	for name, value := range event.Extensions {
		attributes[name] = value
	}
	for name, value := range attributes {
		if value != "" {
			header.Set("Ce-"+name, headerValue(value))
		}
	}
	if len(event.Data) > 0 {
		contentType := event.DataContentType
		if contentType == "" {
			contentType = "application/json"
		}
		header.Set("Content-Type", contentType)
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(event.Data)
}
