//! Property: for random layer stacks, `strata flatten` == the same stacks applied to an empty
//! directory by the reference model (tests/common/model.rs).

mod common;

use common::model::{model_of, strata_of};
use common::stacks::{stack, tars};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn flatten_equals_applying_layers_to_a_directory(ops in stack()) {
        let layers = tars(&ops);
        // Stacks the model cannot apply (a hardlink to nothing) are not images.
        let Ok(want) = model_of(&layers) else { return Ok(()); };
        let got = strata_of(&layers);
        prop_assert!(got.is_ok(), "strata failed: {:?}", got.err());
        let got = got.unwrap();
        prop_assert_eq!(want.paths, got.paths);
        prop_assert_eq!(want.links, got.links);
    }
}
