//! Unit tests of the NFS checks on fixture host trees under `testdata/nfs/`.
