// Command {{name}} serves the function in handle.go: the harness of serval's
// go/cloudevents template. Every POST is read as a CloudEvent (binary or structured
// content mode, see cloudevent.go) and handed to Handle; the event it returns goes back
// in binary mode (200), none is 204 No Content, an invalid event 400, an error 500.
// Edit handle.go; this file rarely needs a change.
//
//	PORT       the port to listen on (default 8080; serval sets it)
//	BIND_ADDR  the address to listen on (default 0.0.0.0, every interface)
//
// SIGTERM (or Ctrl-C) stops it: it stops accepting, lets the requests in flight finish
// (at most 10 s) and exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const drain = 10 * time.Second

func main() {
	if err := serve(http.HandlerFunc(serveEvent)); err != nil {
		log.Fatal(err)
	}
}

// serveEvent answers one request with Handle's answer to its event.
func serveEvent(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "send CloudEvents with POST", http.StatusMethodNotAllowed)
		return
	}
	event, err := FromHTTP(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	reply, err := Handle(r.Context(), event)
	if err != nil {
		log.Printf("handle %s: %v", event.ID, err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if reply == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	WriteHTTP(w, *reply)
}

// serve serves handler on BIND_ADDR:PORT until SIGTERM or SIGINT, then drains.
func serve(handler http.Handler) error {
	address := os.Getenv("BIND_ADDR")
	if address == "" {
		address = "0.0.0.0"
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	listener, err := net.Listen("tcp", net.JoinHostPort(address, port))
	if err != nil {
		return err
	}
	server := &http.Server{Handler: logged(handler), ReadHeaderTimeout: 10 * time.Second}
	signals, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	drained := make(chan error, 1)
	go func() {
		<-signals.Done()
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		drained <- server.Shutdown(ctx)
	}()
	fmt.Printf("{{name}} listening on %s\n", listener.Addr())
	if err := server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return <-drained
}

// logged prints one line per request.
func logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		recorder := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(recorder, r)
		fmt.Printf("%q %d\n", r.Method+" "+r.URL.RequestURI()+" "+r.Proto, recorder.status)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}
