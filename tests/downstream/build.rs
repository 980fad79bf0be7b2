// Link libtorch with an rpath (see the amp-build crate).
fn main() {
    amp_build::link_libtorch();
}
