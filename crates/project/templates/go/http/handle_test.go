package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func call(method, target, body string) *httptest.ResponseRecorder {
	recorder := httptest.NewRecorder()
	Handle(recorder, httptest.NewRequest(method, target, strings.NewReader(body)))
	return recorder
}

func TestGreetsByName(t *testing.T) {
	response := call(http.MethodGet, "/?name=serval", "")
	if response.Code != http.StatusOK || response.Body.String() != "Hello, serval!\n" {
		t.Fatalf("got %d %q", response.Code, response.Body.String())
	}
}

func TestGreetsTheWorldWithoutAName(t *testing.T) {
	if got := call(http.MethodGet, "/", "").Body.String(); got != "Hello, World!\n" {
		t.Fatalf("got %q", got)
	}
}

func TestAnswersAPostWithJSON(t *testing.T) {
	response := call(http.MethodPost, "/", "hi")
	if got := response.Header().Get("Content-Type"); got != "application/json" {
		t.Fatalf("content type %q", got)
	}
	if got := response.Body.String(); got != "{\"received\":\"hi\"}\n" {
		t.Fatalf("got %q", got)
	}
}
