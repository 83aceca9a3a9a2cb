package main

import (
	"context"
	"strings"
)

// Handle is the function: serval calls it with every CloudEvent that arrives. It answers
// with an event (a broker takes it as a new event) or with none (nil); an error answers
// 500. event.Data holds the data's bytes (JSON text when DataContentType is JSON).
func Handle(ctx context.Context, event Event) (*Event, error) {
	if strings.HasSuffix(event.Type, ".reply") {
		return nil, nil // never answer a reply: no event loops through a broker
	}
	reply := NewEvent(event.Type+".reply", "{{name}}")
	reply.Subject = event.ID
	reply.DataContentType = event.DataContentType
	reply.Data = event.Data
	return &reply, nil
}
