fn main() {
    print!("{}", secretsync_api::crd::crds_yaml().unwrap());
}
