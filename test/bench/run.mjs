// Placeholder: benchmarks land with the native helper and the server engine.
console.log('no benchmarks yet');
