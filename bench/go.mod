module lading.dev/bench

go 1.22
