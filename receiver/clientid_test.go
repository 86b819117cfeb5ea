package receiver

import (
	"strings"
	"testing"

	"github.com/meshingest/meshingest/shared"
)

func TestClientID_Instance_DiffersPerInstance(t *testing.T) {
	for _, src := range []shared.Source{
		{Name: "q1", QoS: 1},
		{Name: "q1", QoS: 1, ClientID: "fixed"},
	} {
		single, a, b := clientID(src, ""), clientID(src, "a"), clientID(src, "b")
		if a == b || a == single || b == single {
			t.Errorf("%+v: ids single %q, a %q, b %q: instances must not share a client id", src, single, a, b)
		}
		// QoS 1 sessions must be found again after a restart.
		if again := clientID(src, "a"); again != a {
			t.Errorf("%+v: instance a's id changed between calls: %q then %q", src, a, again)
		}
		if !strings.Contains(a, "a") {
			t.Errorf("%+v: instance a's id %q does not name it", src, a)
		}
	}
	if got := clientID(shared.Source{Name: "q1", QoS: 1, ClientID: "fixed"}, ""); got != "fixed" {
		t.Errorf("single receiver with clientId fixed: id %q, want it as it is", got)
	}
}
