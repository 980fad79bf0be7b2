//! Smoke test of the libtorch toolchain through tch on CPU: tensor arithmetic, autograd through a
//! small module trained with AdamW, and an exact safetensors save/load round trip.
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[test]
fn tensor_ops_match_hand_computed_values() {
    let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
    let b = Tensor::from_slice(&[5.0f32, 6.0, 7.0, 8.0]).reshape([2, 2]);
    let c = a.matmul(&b);
    assert_eq!(Vec::<f32>::try_from(c.flatten(0, -1)).unwrap(), vec![19.0, 22.0, 43.0, 50.0]);
    let lse = Tensor::from_slice(&[0.0f64, 0.0]).logsumexp([0], false).double_value(&[]);
    assert!((lse - 2f64.ln()).abs() < 1e-12);
    let idx = Tensor::from_slice(&[1i64, 0]).unsqueeze(1);
    let g = a.gather(1, &idx, false);
    assert_eq!(Vec::<f32>::try_from(g.flatten(0, -1)).unwrap(), vec![2.0, 3.0]);
}

#[test]
fn autograd_matches_the_analytic_gradient() {
    // d/dx sum(x^3) = 3x^2
    let x = Tensor::from_slice(&[1.0f64, -2.0, 0.5]).set_requires_grad(true);
    let y = x.pow_tensor_scalar(3).sum(Kind::Double);
    y.backward();
    let g = Vec::<f64>::try_from(x.grad()).unwrap();
    assert_eq!(g, vec![3.0, 12.0, 0.75]);
}

#[test]
fn adamw_fits_a_small_mlp_and_safetensors_round_trips_exactly() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = nn::seq()
        .add(nn::linear(vs.root() / "fc1", 4, 16, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs.root() / "fc2", 16, 3, Default::default()));
    let mut opt = nn::AdamW::default().build(&vs, 1e-2).unwrap();
    let xs = Tensor::randn([64, 4], (Kind::Float, Device::Cpu));
    // A learnable target: the class is the argmax of the first three features.
    let ys = xs.narrow(1, 0, 3).argmax(1, false);
    let loss_at = |net: &nn::Sequential| {
        net.forward(&xs).log_softmax(-1, Kind::Float).nll_loss(&ys).double_value(&[])
    };
    let first = loss_at(&net);
    for _ in 0..200 {
        let loss = net.forward(&xs).log_softmax(-1, Kind::Float).nll_loss(&ys);
        opt.backward_step(&loss);
    }
    let last = loss_at(&net);
    assert!(last < first * 0.3, "loss went from {first} to {last}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    vs.save(&path).unwrap();
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let net2 = nn::seq()
        .add(nn::linear(vs2.root() / "fc1", 4, 16, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(vs2.root() / "fc2", 16, 3, Default::default()));
    vs2.load(&path).unwrap();
    for (name, t) in vs.variables() {
        let t2 = &vs2.variables()[&name];
        assert!(t.equal(t2), "{name} differs after the round trip");
    }
    assert!(net.forward(&xs).equal(&net2.forward(&xs)));
    // The file is standard safetensors: the safetensors crate reads the same names and bytes.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<_> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    assert_eq!(names, vec!["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
    let w = st.tensor("fc2.weight").unwrap();
    let vals: Vec<f32> = w.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let expect = Vec::<f32>::try_from(vs.variables()["fc2.weight"].flatten(0, -1)).unwrap();
    assert_eq!(vals, expect);
}
