package qrpng

// Cached is how many images a Renderer remembers, for the eviction test.
const Cached = cached
