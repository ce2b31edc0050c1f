//! ARIMA(p, d, q) for SLA forecasts, p, q ≤ 2 and d ≤ 1: exact Gaussian likelihood by
//! the Kalman filter (state space in Harvey's form, stationary initial state), maximum
//! likelihood by Nelder–Mead over unconstrained parameters mapped onto the stationary and
//! invertible region (partial autocorrelations through Durbin–Levinson, as statsmodels
//! does), σ² concentrated out. For d = 0 the mean is a parameter; for d = 1 there is no
//! drift (statsmodels' defaults, so its fits are the reference).
//!
//! Forecasts come from the state-space recursions (for d = 1 the state is augmented with
//! the last level), so the standard error grows with the horizon as the model says. The
//! probability of leaving a range:
//! - per step: the normal tail mass outside [min, max] at that step;
//! - within the horizon: the share of simulated sample paths (fixed seed, so the answer is
//!   reproducible) that leave the range at any step.

use rand::{Rng, SeedableRng};

/// Fewest observations a fit accepts.
pub const MIN_POINTS: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub p: usize,
    pub d: usize,
    pub q: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArimaError {
    #[error("need at least {need} samples of history, have {have}")]
    TooShort { need: usize, have: usize },
    #[error("order ({0}, {1}, {2}) is outside p, q ≤ 2, d ≤ 1")]
    BadOrder(usize, usize, usize),
    #[error("the history holds non-finite values")]
    NotFinite,
}

/// A fitted model, ready to forecast from the end of its series.
#[derive(Debug, Clone)]
pub struct Fit {
    pub order: Order,
    pub phi: Vec<f64>,
    pub theta: Vec<f64>,
    /// Mean of the (d = 0) series; 0 when d = 1.
    pub mean: f64,
    pub sigma2: f64,
    pub aic: f64,
    /// Predicted state a(n+1|n) of the demeaned, differenced series.
    state: Vec<f64>,
    /// Last observation (the level the d = 1 forecasts start from).
    last: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub mean: Vec<f64>,
    pub se: Vec<f64>,
}

type Mat = Vec<Vec<f64>>;

fn zeros(n: usize) -> Mat {
    vec![vec![0.0; n]; n]
}

/// T x.
fn mat_vec(t: &Mat, x: &[f64]) -> Vec<f64> {
    t.iter()
        .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

/// T P T' + R R': one step of the state covariance.
fn propagate(t: &Mat, p: &Mat, rv: &[f64]) -> Mat {
    let r = t.len();
    let tp: Mat = (0..r)
        .map(|i| {
            (0..r)
                .map(|j| (0..r).map(|l| t[i][l] * p[l][j]).sum())
                .collect()
        })
        .collect();
    (0..r)
        .map(|i| {
            (0..r)
                .map(|j| (0..r).map(|l| tp[i][l] * t[j][l]).sum::<f64>() + rv[i] * rv[j])
                .collect()
        })
        .collect()
}

/// Stationary AR coefficients from unconstrained values (Monahan 1984, as statsmodels'
/// `constrain_stationary_univariate`).
fn constrain(x: &[f64]) -> Vec<f64> {
    let n = x.len();
    let r: Vec<f64> = x.iter().map(|v| v / (1.0 + v * v).sqrt()).collect();
    let mut y = zeros(n.max(1));
    for k in 0..n {
        for i in 0..k {
            y[k][i] = y[k - 1][i] + r[k] * y[k - 1][k - i - 1];
        }
        y[k][k] = r[k];
    }
    if n == 0 {
        return Vec::new();
    }
    y[n - 1].iter().map(|v| -v).collect()
}

/// The system matrices of an ARMA(p, q): T, R (Z picks the first state).
fn system(phi: &[f64], theta: &[f64]) -> (Mat, Vec<f64>) {
    let r = phi.len().max(theta.len() + 1);
    let mut t = zeros(r);
    for (i, &f) in phi.iter().enumerate() {
        t[i][0] = f;
    }
    for i in 0..r - 1 {
        t[i][i + 1] = 1.0;
    }
    let mut rv = vec![0.0; r];
    rv[0] = 1.0;
    for (i, &th) in theta.iter().enumerate() {
        rv[i + 1] = th;
    }
    (t, rv)
}

/// Solves P = T P T' + R R' (the stationary state covariance, σ² = 1) by the vectorised
/// linear system (I − T⊗T) vec P = vec RR'.
fn stationary_cov(t: &Mat, rv: &[f64]) -> Option<Mat> {
    let r = t.len();
    let n = r * r;
    let mut a = vec![vec![0.0; n + 1]; n];
    for i in 0..r {
        for j in 0..r {
            let row = i * r + j;
            for k in 0..r {
                for l in 0..r {
                    a[row][k * r + l] -= t[i][k] * t[j][l];
                }
            }
            a[row][row] += 1.0;
            a[row][n] = rv[i] * rv[j];
        }
    }
    // Gaussian elimination with partial pivoting.
    for c in 0..n {
        let pivot = (c..n).max_by(|&x, &y| a[x][c].abs().total_cmp(&a[y][c].abs()))?;
        if a[pivot][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, pivot);
        let pivot_row = a[c].clone();
        for (i, row) in a.iter_mut().enumerate() {
            let f = row[c] / pivot_row[c];
            if i != c && f != 0.0 {
                for (v, pv) in row.iter_mut().zip(&pivot_row).skip(c) {
                    *v -= f * pv;
                }
            }
        }
    }
    let mut p = zeros(r);
    for i in 0..r {
        for j in 0..r {
            p[i][j] = a[i * r + j][n] / a[i * r + j][i * r + j];
        }
    }
    Some(p)
}

struct Filtered {
    /// Σ v²/F and Σ ln F over the observations.
    ssq: f64,
    sumlog: f64,
    state: Vec<f64>,
}

/// Runs the Kalman filter (σ² = 1) over the demeaned series `w`.
fn filter(w: &[f64], phi: &[f64], theta: &[f64]) -> Option<Filtered> {
    let (t, rv) = system(phi, theta);
    let r = t.len();
    let mut p = stationary_cov(&t, &rv)?;
    let mut a = vec![0.0; r];
    let (mut ssq, mut sumlog) = (0.0, 0.0);
    for &obs in w {
        let v = obs - a[0];
        let f = p[0][0];
        if f.is_nan() || f <= 1e-12 {
            return None;
        }
        ssq += v * v / f;
        sumlog += f.ln();
        // K = T P Z' / F; a = T a + K v; P = T P T' + RR' − K K' F.
        let pz: Vec<f64> = (0..r).map(|i| p[i][0]).collect();
        let k: Vec<f64> = mat_vec(&t, &pz).into_iter().map(|v| v / f).collect();
        let ta = mat_vec(&t, &a);
        a = (0..r).map(|i| ta[i] + k[i] * v).collect();
        let next = propagate(&t, &p, &rv);
        p = (0..r)
            .map(|i| (0..r).map(|j| next[i][j] - k[i] * k[j] * f).collect())
            .collect();
    }
    Some(Filtered {
        ssq,
        sumlog,
        state: a,
    })
}

/// Concentrated log-likelihood and σ̂².
fn loglik(w: &[f64], phi: &[f64], theta: &[f64]) -> Option<(f64, f64, Vec<f64>)> {
    let f = filter(w, phi, theta)?;
    let n = w.len() as f64;
    let sigma2 = f.ssq / n;
    if sigma2.is_nan() || sigma2 <= 0.0 {
        return None;
    }
    let ll = -0.5 * n * ((2.0 * std::f64::consts::PI).ln() + sigma2.ln() + 1.0) - 0.5 * f.sumlog;
    Some((ll, sigma2, f.state))
}

/// Minimises `f` from `start` by Nelder–Mead.
fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, start: &[f64], steps: &[f64]) -> Vec<f64> {
    let n = start.len();
    if n == 0 {
        return Vec::new();
    }
    let mut simplex: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n + 1);
    simplex.push((start.to_vec(), f(start)));
    for i in 0..n {
        let mut x = start.to_vec();
        x[i] += steps[i];
        let fx = f(&x);
        simplex.push((x, fx));
    }
    for _ in 0..(400 * n) {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (best, worst) = (simplex[0].1, simplex[n].1);
        if (worst - best).abs() <= 1e-10 * (1.0 + best.abs()) {
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|j| simplex[..n].iter().map(|(x, _)| x[j]).sum::<f64>() / n as f64)
            .collect();
        let along = |c: f64| -> Vec<f64> {
            (0..n)
                .map(|j| centroid[j] + c * (simplex[n].0[j] - centroid[j]))
                .collect()
        };
        let xr = along(-1.0);
        let fr = f(&xr);
        if fr < simplex[0].1 {
            let xe = along(-2.0);
            let fe = f(&xe);
            simplex[n] = if fe < fr { (xe, fe) } else { (xr, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (xr, fr);
        } else {
            let xc = if fr < simplex[n].1 {
                along(-0.5)
            } else {
                along(0.5)
            };
            let fc = f(&xc);
            if fc < simplex[n].1.min(fr) {
                simplex[n] = (xc, fc);
            } else {
                let best = simplex[0].0.clone();
                for (x, fx) in simplex.iter_mut().skip(1) {
                    for j in 0..n {
                        x[j] = best[j] + 0.5 * (x[j] - best[j]);
                    }
                    *fx = f(x);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0).0
}

fn check(y: &[f64], order: Order) -> Result<(), ArimaError> {
    if order.p > 2 || order.q > 2 || order.d > 1 {
        return Err(ArimaError::BadOrder(order.p, order.d, order.q));
    }
    if y.len() < MIN_POINTS {
        return Err(ArimaError::TooShort {
            need: MIN_POINTS,
            have: y.len(),
        });
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(ArimaError::NotFinite);
    }
    Ok(())
}

/// Fits ARIMA(`order`) to `y` by maximum likelihood.
pub fn fit(y: &[f64], order: Order) -> Result<Fit, ArimaError> {
    check(y, order)?;
    let w: Vec<f64> = if order.d == 1 {
        y.windows(2).map(|p| p[1] - p[0]).collect()
    } else {
        y.to_vec()
    };
    let n = w.len() as f64;
    let sample_mean = w.iter().sum::<f64>() / n;
    let spread = (w.iter().map(|v| (v - sample_mean).powi(2)).sum::<f64>() / n).sqrt();
    let with_mean = order.d == 0;
    let last = *y.last().unwrap_or(&0.0);
    if spread < 1e-12 {
        // A constant series: it stays where it is, with no uncertainty.
        return Ok(Fit {
            order,
            phi: vec![0.0; order.p],
            theta: vec![0.0; order.q],
            mean: if with_mean { sample_mean } else { 0.0 },
            sigma2: 0.0,
            aic: f64::NEG_INFINITY,
            state: vec![0.0; order.p.max(order.q + 1)],
            last,
        });
    }
    let unpack = |x: &[f64]| {
        let phi = constrain(&x[..order.p]);
        let theta: Vec<f64> = constrain(&x[order.p..order.p + order.q])
            .into_iter()
            .map(|v| -v)
            .collect();
        let mean = if with_mean { x[order.p + order.q] } else { 0.0 };
        (phi, theta, mean)
    };
    let objective = |x: &[f64]| -> f64 {
        let (phi, theta, mean) = unpack(x);
        let demeaned: Vec<f64> = w.iter().map(|v| v - mean).collect();
        loglik(&demeaned, &phi, &theta).map_or(f64::INFINITY, |(ll, _, _)| -ll)
    };
    let mut start = vec![0.0; order.p + order.q];
    let mut steps = vec![0.5; order.p + order.q];
    if with_mean {
        start.push(sample_mean);
        steps.push(0.2 * spread);
    }
    let mut best = nelder_mead(&objective, &start, &steps);
    // One restart from the optimum shakes Nelder–Mead out of a collapsed simplex.
    best = nelder_mead(&objective, &best, &steps);
    let (phi, theta, mean) = unpack(&best);
    let demeaned: Vec<f64> = w.iter().map(|v| v - mean).collect();
    let (ll, sigma2, state) = loglik(&demeaned, &phi, &theta).ok_or(ArimaError::NotFinite)?;
    let k = order.p + order.q + usize::from(with_mean) + 1;
    Ok(Fit {
        order,
        phi,
        theta,
        mean,
        sigma2,
        aic: -2.0 * ll + 2.0 * k as f64,
        state,
        last,
    })
}

/// Fits every order with p, q ≤ 2 and d ≤ 1 and keeps the lowest AIC. Orders with d = 1
/// lose one observation, so AICs are compared within one d first: d = 1 wins only when
/// its best model's AIC is lower than d = 0's best.
pub fn select(y: &[f64]) -> Result<Fit, ArimaError> {
    check(y, Order { p: 0, d: 0, q: 0 })?;
    let mut best: Option<Fit> = None;
    for d in 0..=1 {
        for p in 0..=2 {
            for q in 0..=2 {
                let candidate = fit(y, Order { p, d, q })?;
                if best.as_ref().is_none_or(|b| candidate.aic < b.aic) {
                    best = Some(candidate);
                }
            }
        }
    }
    best.ok_or(ArimaError::TooShort {
        need: MIN_POINTS,
        have: y.len(),
    })
}

impl Fit {
    /// The augmented system: for d = 1 the first state is the last level.
    fn forecast_system(&self) -> (Mat, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (t, rv) = system(&self.phi, &self.theta);
        let r = t.len();
        if self.order.d == 0 {
            let mut z = vec![0.0; r];
            z[0] = 1.0;
            return (t, rv, z, self.state.clone());
        }
        let mut ta = zeros(r + 1);
        ta[0][0] = 1.0;
        ta[0][1] = 1.0;
        for i in 0..r {
            for j in 0..r {
                ta[i + 1][j + 1] = t[i][j];
            }
        }
        let mut ra = vec![0.0; r + 1];
        ra[1..].copy_from_slice(&rv);
        let mut z = vec![0.0; r + 1];
        z[0] = 1.0;
        z[1] = 1.0;
        let mut x = vec![self.last];
        x.extend_from_slice(&self.state);
        (ta, ra, z, x)
    }

    /// Mean and standard error for the next `h` steps.
    pub fn forecast(&self, h: usize) -> Forecast {
        let (t, rv, z, mut x) = self.forecast_system();
        let r = t.len();
        // Past observations fix the current state; from here each step adds R ε.
        let mut p = zeros(r);
        let mut mean = Vec::with_capacity(h);
        let mut se = Vec::with_capacity(h);
        let offset = if self.order.d == 0 { self.mean } else { 0.0 };
        for step in 0..h {
            if step == 0 {
                // a(n+1|n) already carries the one-step uncertainty RR'.
                for i in 0..r {
                    for j in 0..r {
                        p[i][j] = rv[i] * rv[j];
                    }
                }
            } else {
                x = mat_vec(&t, &x);
                p = propagate(&t, &p, &rv);
            }
            let m: f64 = (0..r).map(|i| z[i] * x[i]).sum();
            let v: f64 = (0..r)
                .map(|i| (0..r).map(|j| z[i] * p[i][j] * z[j]).sum::<f64>())
                .sum();
            mean.push(m + offset);
            se.push((v * self.sigma2).max(0.0).sqrt());
        }
        Forecast { mean, se }
    }

    /// Share of `paths` simulated futures that leave [`lo`, `hi`] within `h` steps.
    pub fn exceedance(&self, h: usize, lo: Option<f64>, hi: Option<f64>, paths: usize) -> f64 {
        let (t, rv, z, x0) = self.forecast_system();
        let r = t.len();
        let offset = if self.order.d == 0 { self.mean } else { 0.0 };
        let sd = self.sigma2.sqrt();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED_A81A);
        let mut left = 0usize;
        for _ in 0..paths.max(1) {
            // The state at n+1 before its shock: T applied once is already in x0.
            let mut x = x0.clone();
            let mut out = false;
            for step in 0..h {
                if step > 0 {
                    x = (0..r)
                        .map(|i| (0..r).map(|j| t[i][j] * x[j]).sum())
                        .collect();
                }
                let e = sd * standard_normal(&mut rng);
                for i in 0..r {
                    x[i] += rv[i] * e;
                }
                let y: f64 = (0..r).map(|i| z[i] * x[i]).sum::<f64>() + offset;
                if lo.is_some_and(|l| y < l) || hi.is_some_and(|u| y > u) {
                    out = true;
                    break;
                }
            }
            left += usize::from(out);
        }
        left as f64 / paths.max(1) as f64
    }
}

fn standard_normal(rng: &mut impl Rng) -> f64 {
    // Box–Muller; 1 − u keeps the logarithm finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Standard normal CDF (erfc by W. J. Cody's rational approximations via libm-free
/// Abramowitz–Stegun 7.1.26 refinement; absolute error < 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-z * z).exp();
    if z >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// Probability that a normal(mean, se) value falls outside [`lo`, `hi`].
pub fn outside(mean: f64, se: f64, lo: Option<f64>, hi: Option<f64>) -> f64 {
    if se <= 0.0 {
        return f64::from(u8::from(
            lo.is_some_and(|l| mean < l) || hi.is_some_and(|u| mean > u),
        ));
    }
    let below = lo.map_or(0.0, |l| normal_cdf((l - mean) / se));
    let above = hi.map_or(0.0, |u| 1.0 - normal_cdf((u - mean) / se));
    (below + above).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Reference {
        series: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        order: Order,
        series: Vec<f64>,
        h: usize,
        lo: f64,
        hi: f64,
        aic: f64,
        mean: Vec<f64>,
        se: Vec<f64>,
        prob_step: Vec<f64>,
        prob_within: f64,
    }

    /// Agreement with statsmodels (tests/fixtures/arima.json, made by
    /// scripts/gen-sla-reference.py): forecast means within 5 % of the series' standard
    /// deviation, standard errors within 5 %, probabilities within 0.05, AIC within 1.
    #[test]
    fn agrees_with_statsmodels() {
        let reference: Reference =
            serde_json::from_str(include_str!("../../../tests/fixtures/arima.json")).unwrap();
        for case in reference.series {
            let fit = fit(&case.series, case.order).unwrap();
            let n = case.series.len() as f64;
            let m = case.series.iter().sum::<f64>() / n;
            let sd = (case.series.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
            let fc = fit.forecast(case.h);
            let name = &case.name;
            assert!(
                (fit.aic - case.aic).abs() < 1.0,
                "{name}: aic {} vs {}",
                fit.aic,
                case.aic
            );
            for k in 0..case.h {
                assert!(
                    (fc.mean[k] - case.mean[k]).abs() <= 0.05 * sd,
                    "{name} step {k}: mean {} vs {}",
                    fc.mean[k],
                    case.mean[k]
                );
                assert!(
                    (fc.se[k] - case.se[k]).abs() <= 0.05 * case.se[k],
                    "{name} step {k}: se {} vs {}",
                    fc.se[k],
                    case.se[k]
                );
                let p = outside(fc.mean[k], fc.se[k], Some(case.lo), Some(case.hi));
                assert!(
                    (p - case.prob_step[k]).abs() <= 0.05,
                    "{name} step {k}: p {p} vs {}",
                    case.prob_step[k]
                );
            }
            let within = fit.exceedance(case.h, Some(case.lo), Some(case.hi), 4000);
            assert!(
                (within - case.prob_within).abs() <= 0.05,
                "{name}: within {within} vs {}",
                case.prob_within
            );
        }
    }

    #[test]
    fn selection_prefers_the_generating_shape() {
        // A random walk is found integrated; white noise is not.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut level = 0.0;
        let walk: Vec<f64> = (0..150)
            .map(|_| {
                level += standard_normal(&mut rng);
                level
            })
            .collect();
        assert_eq!(select(&walk).unwrap().order.d, 1);
        let noise: Vec<f64> = (0..150).map(|_| 5.0 + standard_normal(&mut rng)).collect();
        assert_eq!(select(&noise).unwrap().order.d, 0);
    }

    #[test]
    fn short_or_broken_history_is_refused() {
        let y = vec![1.0; 10];
        assert_eq!(
            fit(&y, Order { p: 1, d: 0, q: 0 }).unwrap_err(),
            ArimaError::TooShort {
                need: MIN_POINTS,
                have: 10
            }
        );
        let mut y = vec![1.0; 40];
        y[3] = f64::NAN;
        assert_eq!(select(&y).unwrap_err(), ArimaError::NotFinite);
        assert!(matches!(
            fit(&[0.0; 40], Order { p: 3, d: 0, q: 0 }),
            Err(ArimaError::BadOrder(3, 0, 0))
        ));
    }

    #[test]
    fn a_constant_series_forecasts_itself_with_certainty() {
        let fit = fit(&[4.0; 40], Order { p: 1, d: 0, q: 0 }).unwrap();
        let fc = fit.forecast(3);
        assert_eq!(fc.mean, vec![4.0; 3]);
        assert_eq!(fc.se, vec![0.0; 3]);
        assert_eq!(outside(4.0, 0.0, None, Some(3.0)), 1.0);
        assert_eq!(outside(4.0, 0.0, None, Some(5.0)), 0.0);
    }

    #[test]
    fn normal_tails() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-1.0) - 0.158_655_25).abs() < 1e-6);
        assert!((outside(0.0, 1.0, Some(-1.0), Some(1.0)) - 0.317_310_5).abs() < 1e-6);
    }
}
