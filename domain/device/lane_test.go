package device

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLaneOneDrainerInOrder pushes from several goroutines at once and
// checks that items are handled one at a time (never by two drainers at
// once), each
// producer's in the order pushed, and that no drainer is left once the lane
// is empty.
func TestLaneOneDrainerInOrder(t *testing.T) {
	t.Parallel()
	const producers, each = 8, 500
	var (
		q       lane[[2]int]
		active  atomic.Int32
		started atomic.Int32
		mu      sync.Mutex
		last    [producers]int
		bad     []string
		taken   sync.WaitGroup
	)
	q.init()
	taken.Add(producers * each)
	drain := func() {
		for {
			v, ok := q.next()
			if !ok {
				return
			}
			if active.Add(1) != 1 {
				mu.Lock()
				bad = append(bad, "two drainers at once")
				mu.Unlock()
			}
			mu.Lock()
			if v[1] != last[v[0]]+1 {
				bad = append(bad, "out of order")
			}
			last[v[0]] = v[1]
			mu.Unlock()
			active.Add(-1)
			taken.Done()
		}
	}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= each; i++ {
				if q.push([2]int{p, i}) {
					started.Add(1)
					go drain()
				}
				if i%50 == 0 {
					time.Sleep(time.Millisecond) // let the lane run dry now and then
				}
			}
		}()
	}
	wg.Wait()
	taken.Wait()
	select {
	case <-q.close():
	case <-time.After(60 * time.Second):
		t.Fatal("the lane did not report drained after close")
	}
	if len(bad) > 0 {
		t.Fatalf("%d faults, first: %s", len(bad), bad[0])
	}
	if q.push([2]int{0, each + 1}) {
		t.Fatal("a closed lane asked for a drainer")
	}
	t.Logf("%d drainers started for %d items", started.Load(), producers*each)
}

// TestLaneCloseWaitsForTheDrainer checks that close's channel stays open
// while a drainer is still taking queued items, and closes once it is done.
func TestLaneCloseWaitsForTheDrainer(t *testing.T) {
	t.Parallel()
	var q lane[int]
	q.init()
	if !q.push(1) {
		t.Fatal("the first push did not ask for a drainer")
	}
	if q.push(2) {
		t.Fatal("a second push asked for a second drainer")
	}
	drained := q.close()
	select {
	case <-drained:
		t.Fatal("drained while two items wait")
	default:
	}
	for want := 1; want <= 2; want++ {
		if v, ok := q.next(); !ok || v != want {
			t.Fatalf("next = %d, %v; want %d", v, ok, want)
		}
	}
	if _, ok := q.next(); ok {
		t.Fatal("next gave an item from an empty lane")
	}
	select {
	case <-drained:
	default:
		t.Fatal("not drained once the drainer left")
	}
}
