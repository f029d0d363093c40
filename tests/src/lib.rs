//! Test harness: real processes, cuttable TCP proxies, deadlines.
