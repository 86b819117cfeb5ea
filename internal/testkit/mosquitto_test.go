package testkit

import (
	"net"
	"strconv"
	"testing"
	"time"
)

func TestStart_AcceptsConnectionsAndRestarts(t *testing.T) {
	b := StartMosquitto(t, MosquittoOptions{Persistence: true})
	dial := func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(b.Port), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatal(err)
	}
	b.Restart(100 * time.Millisecond)
	if err := dial(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	b.Stop()
	if err := dial(); err == nil {
		t.Fatal("still accepting after Stop")
	}
}
