// Package harness is the load and fault harness behind `meshingest-harness
// bench` and `meshingest-harness chaos`: it runs the real meshingest binary as a receiver
// and a writer process against a real mosquitto and real files, feeds them
// realistic traffic from package loadgen, breaks things while the load
// runs (SIGKILLs, a held database lock, a broker restart, a full spool,
// damaged segments, a database swapped under a stopped writer), and then
// checks every published message against the database: present exactly
// once, or dropped with a counted reason. It measures publish → row
// latency, fsyncs, disk bytes, CPU and RSS per process, and writes a
// markdown report with a PNG plot of lag and spool depth over time.
package harness
