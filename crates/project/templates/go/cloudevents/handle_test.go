package main

import (
	"context"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestAnswersAnEventWithItsData(t *testing.T) {
	event := NewEvent("com.example.order", "/shop")
	event.Data = []byte(`{"item":"book"}`)
	reply, err := Handle(context.Background(), event)
	if err != nil || reply == nil {
		t.Fatalf("no reply: %v", err)
	}
	if reply.Type != "com.example.order.reply" || reply.Subject != event.ID || string(reply.Data) != `{"item":"book"}` {
		t.Fatalf("reply %+v", reply)
	}
}

func TestDoesNotAnswerAReply(t *testing.T) {
	reply, err := Handle(context.Background(), NewEvent("com.example.order.reply", "/shop"))
	if err != nil || reply != nil {
		t.Fatalf("got %+v, %v", reply, err)
	}
}

func TestBinaryAndStructuredRequestsGiveTheSameEvent(t *testing.T) {
	binary := httptest.NewRequest("POST", "/", strings.NewReader(`{"item":"book"}`))
	for name, value := range map[string]string{
		"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/shop", "ce-type": "com.example.order",
		"Content-Type": "application/json",
	} {
		binary.Header.Set(name, value)
	}
	structured := httptest.NewRequest("POST", "/", strings.NewReader(`{"specversion":"1.0","id":"1",
		"source":"/shop","type":"com.example.order","datacontenttype":"application/json","data":{"item":"book"}}`))
	structured.Header.Set("Content-Type", "application/cloudevents+json")
	fromBinary, err := FromHTTP(binary)
	if err != nil {
		t.Fatal(err)
	}
	fromStructured, err := FromHTTP(structured)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromBinary, fromStructured) {
		t.Fatalf("binary %+v, structured %+v", fromBinary, fromStructured)
	}
	recorder := httptest.NewRecorder()
	reply, _ := Handle(context.Background(), fromBinary)
	WriteHTTP(recorder, *reply)
	if got := recorder.Header().Get("ce-type"); got != "com.example.order.reply" {
		t.Fatalf("ce-type %q", got)
	}
}
