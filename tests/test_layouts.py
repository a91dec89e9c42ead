"""Layout detection and parsing for every dataset shape the image ExampleGen understands.

Trees of empty placeholder files, as the benchmarks lay them out; no image is decoded here.
"""

import os

import pytest

from fakedetect.components.image_example_gen import folders
from fakedetect.components.image_example_gen import layouts
from fakedetect.components.image_example_gen import splits
from fakedetect.components.image_example_gen.layouts import Labelled

REAL, FAKE = 0, 1


def _tree(root, rel_paths, content=b'x'):
  for rel in rel_paths:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(content)
  return str(root)


def _detect(tmp_path, rel_paths):
  return layouts.detect(_tree(tmp_path, rel_paths))


def test_cifake(tmp_path):
  layout = _detect(tmp_path, ['Train/REAL/1.jpg', 'Train/FAKE/2.jpg', 'test/real/3.jpg',
                              'test/Fake/4.jpg'])
  assert layout.name == 'cifake' and layout.splits == ('train', 'test')
  assert layout.parse('Train/REAL/1.jpg') == Labelled(REAL, 'real', 'train')
  assert layout.parse('test/Fake/4.jpg') == Labelled(FAKE, 'fake', 'test')


def test_cifake_train_only_has_only_train(tmp_path):
  layout = _detect(tmp_path, ['train/REAL/1.jpg', 'train/FAKE/2.jpg'])
  assert layout.name == 'cifake' and layout.splits == ('train',)
  names, plan = splits.plan_splits({'train': 70, 'eval': 15, 'test': 15}, layout.splits)
  assert names == ['train', 'eval', 'test']
  assert plan == {'train': [('train', 70), ('eval', 15), ('test', 15)]}


def test_140k_faces_keeps_its_three_splits(tmp_path):
  layout = _detect(tmp_path, [f'{split}/{cls}/{i}.jpg' for split in ('train', 'Valid', 'test')
                              for i, cls in enumerate(('real', 'fake'))])
  assert layout.name == '140k_faces' and layout.splits == ('train', 'eval', 'test')
  assert layout.parse('Valid/fake/1.jpg') == Labelled(FAKE, 'fake', 'eval')
  assert layout.parse('train/real/0.jpg') == Labelled(REAL, 'real', 'train')
  names, plan = splits.plan_splits({'train': 70, 'eval': 15, 'test': 15}, layout.splits)
  assert names == ['train', 'eval', 'test']
  assert all(len(candidates) == 1 for candidates in plan.values())  # nothing carved


def test_forensynths(tmp_path):
  layout = _detect(tmp_path, [
      'train/airplane/0_real/a.png', 'train/airplane/1_fake/b.png',
      'train/cat/0_real/c.png', 'train/cat/1_fake/d.png',
      'val/car/0_real/e.png', 'val/car/1_fake/f.png',
      'test/progan/horse/0_real/g.png', 'test/progan/horse/1_fake/h.png',
      'test/BigGAN/0_Real/i.png', 'test/BigGAN/1_fake/j.png'])
  assert layout.name == 'forensynths' and layout.splits == ('train', 'eval', 'test')
  assert layout.parse('train/airplane/0_real/a.png') == Labelled(REAL, 'real', 'train')
  assert layout.parse('train/cat/1_fake/d.png') == Labelled(FAKE, 'fake', 'train')
  assert layout.parse('val/car/1_fake/f.png') == Labelled(FAKE, 'fake', 'eval')
  assert layout.parse('test/progan/horse/1_fake/h.png') == Labelled(FAKE, 'progan', 'test')
  assert layout.parse('test/progan/horse/0_real/g.png') == Labelled(REAL, 'progan', 'test')
  assert layout.parse('test/BigGAN/0_Real/i.png') == Labelled(REAL, 'BigGAN', 'test')
  assert layout.parse('train/airplane/readme.txt') is None
  assert layout.parse('test/progan/x.png') is None


def test_forensynths_test_only(tmp_path):
  layout = _detect(tmp_path, ['test/stylegan/car/0_real/a.png', 'test/stylegan/car/1_fake/b.png'])
  assert layout.name == 'forensynths' and layout.splits == ('test',)
  # A test-only download: the other splits are carved out of it, and the report says so.
  names, plan = splits.plan_splits({'train': 70, 'eval': 15, 'test': 15}, layout.splits)
  assert names == ['train', 'eval', 'test']
  assert plan == {'test': [('test', 15), ('train', 70), ('eval', 15)]}
  assert splits.describe_plan(names, plan)['train'].startswith("carved out of the layout's test")
  with pytest.raises(ValueError, match='must weigh test'):
    splits.plan_splits({'train': 70, 'eval': 30}, layout.splits)


@pytest.mark.parametrize('subset', ['', 'imagenet_ai_0419_sdv4/'])
def test_genimage_carves_test_out_of_train(tmp_path, subset):
  layout = _detect(tmp_path, [
      f'stable_diffusion_v_1_4/{subset}train/ai/a.png',
      f'stable_diffusion_v_1_4/{subset}train/nature/b.JPEG',
      f'stable_diffusion_v_1_4/{subset}val/ai/c.png',
      f'stable_diffusion_v_1_4/{subset}val/nature/d.JPEG',
      'Midjourney/train/AI/e.png', 'Midjourney/train/Nature/f.JPEG'])
  assert layout.name == 'genimage' and layout.splits == ('train', 'eval')
  assert layout.parse(f'stable_diffusion_v_1_4/{subset}train/ai/a.png') == Labelled(
      FAKE, 'stable_diffusion_v_1_4', 'train')
  assert layout.parse(f'stable_diffusion_v_1_4/{subset}val/nature/d.JPEG') == Labelled(
      REAL, 'stable_diffusion_v_1_4', 'eval')
  assert layout.parse('Midjourney/train/AI/e.png') == Labelled(FAKE, 'Midjourney', 'train')
  assert layout.parse('Midjourney/notes.txt') is None
  ratios = {'train': 70, 'eval': 15, 'test': 15}
  names, plan = splits.plan_splits(ratios, layout.splits)
  assert names == ['train', 'eval', 'test']
  assert plan['train'] == [('train', 70), ('test', 15)] and plan['eval'] == [('eval', 1)]
  described = splits.describe_plan(names, plan)
  assert described['test'] == ("carved out of the layout's train split by content hash "
                               '(15/85 of it): the layout has no test split')


def test_plain_with_generators(tmp_path):
  layout = _detect(tmp_path, ['Real/a.png', 'FAKE/sdxl/b.png', 'fake/c.png'])
  assert layout.name == 'plain' and layout.splits == ()
  assert layout.parse('Real/a.png') == Labelled(REAL, 'real')
  assert layout.parse('FAKE/sdxl/b.png') == Labelled(FAKE, 'sdxl')
  # The classic 70/30 split is expressible.
  assert splits.plan_splits({'train': 70, 'test': 30}, layout.splits) == (
      ['train', 'test'], {None: [('train', 70), ('test', 30)]})


def test_manifest_rows_are_the_files_found(tmp_path):
  data = _tree(tmp_path, ['imgs/a.png', 'imgs/b.png', 'other/c.png', 'd.png',
                          'real/never_listed.png', 'fake/never_listed.png'])
  with open(os.path.join(data, 'labels.csv'), 'w') as f:
    f.write('path,label,generator\n'
            'imgs/a.png,real,\n'
            './imgs/b.png,FAKE,sdxl\n'
            'other/c.png,1,\n'
            'd.png,maybe,\n'
            'missing.png,0,\n'
            'imgs/a.png,fake,\n'
            ',real,\n')
  layout = layouts.detect(data)  # the manifest wins over the real/ + fake/ folders
  assert layout.name == 'manifest' and layout.splits == ()
  entries = dict(layout.list_files(data))
  assert sorted(entries) == ['d.png', 'imgs/a.png', 'imgs/b.png', 'labels.csv:8',
                             'missing.png', 'other/c.png']
  assert entries['imgs/b.png'] is None and entries['missing.png'] is None
  for path, problem in (('d.png', "label 'maybe'"), ('imgs/a.png', 'another label'),
                        ('labels.csv:8', 'without a path')):
    reason, detail = folders.problem_reason(entries[path])
    assert reason == 'unlabelled' and problem in detail, path
  assert layout.parse('imgs/b.png') == Labelled(FAKE, 'sdxl')
  assert layout.parse('other/c.png') == Labelled(FAKE, 'fake')
  assert layout.parse('missing.png') == Labelled(REAL, 'real')
  assert layout.parse('imgs/a.png') is None and layout.parse('real/never_listed.png') is None


def test_a_csv_without_path_and_label_is_not_a_manifest(tmp_path):
  data = _tree(tmp_path, ['real/a.png', 'fake/b.png'])
  with open(os.path.join(data, 'stats.csv'), 'w') as f:
    f.write('name,score\na,1\n')
  assert layouts.detect(data).name == 'plain'


def test_every_layout_is_named_when_none_matches(tmp_path):
  with pytest.raises(ValueError) as info:
    _detect(tmp_path, ['photos/a.png', 'renders/b.png'])
  message = str(info.value)
  assert 'Unrecognised layout' in message and 'photos/, renders/' in message
  for layout in layouts.LAYOUTS:
    assert f'  - {layout.name}: ' in message


def test_bound_layouts_survive_pickling(tmp_path):
  """Beam ships the layout to its workers."""
  import pickle  # pylint: disable=g-import-not-at-top
  data = _tree(tmp_path, ['x.png'])
  with open(os.path.join(data, 'm.csv'), 'w') as f:
    f.write('path,label\nx.png,fake\n')
  layout = pickle.loads(pickle.dumps(layouts.detect(data)))
  assert layout.parse('x.png') == Labelled(FAKE, 'fake')


# --- class folders as users name them (issue #16 item 14) ----------------------------------------

@pytest.mark.parametrize('real, fake', [('human', 'ai'), ('Authentic', 'AI_Generated'),
                                        ('real', 'ai-generated'), ('nature', 'generated'),
                                        ('REAL', 'Synthetic'), ('human', 'fake')])
def test_plain_reads_the_class_folder_names_users_give(tmp_path, real, fake):
  layout = _detect(tmp_path, [f'{real}/a.png', f'{fake}/b.png', f'{fake}/gen/c.png'])
  assert layout.name == 'plain'
  assert layout.parse(f'{real}/a.png') == Labelled(REAL, 'real')
  assert layout.parse(f'{fake}/b.png') == Labelled(FAKE, 'fake')
  assert layout.parse(f'{fake}/gen/c.png') == Labelled(FAKE, 'gen')
  assert layout.class_folders == {'real': [f'{real}/'], 'fake': [f'{fake}/']}


def test_split_layouts_read_them_too(tmp_path):
  layout = _detect(tmp_path / 'a', ['train/Human/1.png', 'train/AI/2.png',
                                    'test/authentic/3.png', 'test/synthetic/4.png'])
  assert layout.name == 'cifake' and layout.splits == ('train', 'test')
  assert layout.parse('train/AI/2.png') == Labelled(FAKE, 'fake', 'train')
  assert layout.parse('test/authentic/3.png') == Labelled(REAL, 'real', 'test')
  assert layout.class_folders == {'real': ['test/authentic/', 'train/Human/'],
                                  'fake': ['test/synthetic/', 'train/AI/']}
  # One GenImage generator folder on its own: its train/val with nature/ and ai/ inside.
  layout = _detect(tmp_path / 'b', ['train/nature/1.JPEG', 'train/ai/2.png', 'val/nature/3.JPEG',
                                    'val/ai/4.png'])
  assert layout.name == '140k_faces' and layout.splits == ('train', 'eval')
  assert layout.parse('val/ai/4.png') == Labelled(FAKE, 'fake', 'eval')


def test_the_users_own_class_folders(tmp_path):
  data = _tree(tmp_path, ['real/a.png', 'gan_out/b.png', 'diffusion/sd/c.png', 'fake/d.png'])
  names = layouts.ClassNames(fake_dirs=['gan_out', 'Diffusion/'])
  layout = layouts.detect(data, names)
  assert layout.name == 'plain'
  assert layout.parse('real/a.png') == Labelled(REAL, 'real')
  # Several folders for a class: each names the source of the files directly in it.
  assert layout.parse('gan_out/b.png') == Labelled(FAKE, 'gan_out')
  assert layout.parse('diffusion/sd/c.png') == Labelled(FAKE, 'sd')
  assert layout.parse('fake/d.png') is None  # the names given replace the built-in ones
  assert layout.class_folders == {'real': ['real/'], 'fake': ['diffusion/', 'gan_out/']}
  assert layouts.detect(data, layouts.ClassNames(fake_dirs='gan_out,diffusion')).parse(
      'gan_out/b.png') == Labelled(FAKE, 'gan_out')  # the exec property's text form


def test_two_folders_that_could_hold_one_class_are_refused(tmp_path):
  data = _tree(tmp_path / 'plain', ['real/a.png', 'ai/b.png', 'fake/c.png'])
  with pytest.raises(layouts.LayoutError) as info:
    layouts.detect(data)
  message = str(info.value)
  assert 'ai/, fake/' in message and '--set data.fake_dirs=ai,fake' in message
  layout = layouts.detect(data, layouts.ClassNames(fake_dirs=['fake']))  # the user settles it
  assert layout.parse('fake/c.png') == Labelled(FAKE, 'fake') and layout.parse('ai/b.png') is None
  data = _tree(tmp_path / 'split', ['train/real/a.png', 'train/human/b.png', 'train/fake/c.png'])
  with pytest.raises(layouts.LayoutError, match=r'train has 2 folders .* human/, real/'):
    layouts.detect(data)


def test_a_name_given_for_both_classes_is_refused():
  with pytest.raises(layouts.LayoutError, match='shared would mean both real and fake'):
    layouts.ClassNames(fake_dirs=['shared'], real_dirs=['Shared'])
  with pytest.raises(layouts.LayoutError) as info:
    layouts.ClassNames(fake_dirs=['human'])  # a built-in real name
  assert 'data.real_dirs=real,human,authentic,nature (built-in)' in str(info.value)
  with pytest.raises(layouts.LayoutError, match='not a folder name'):
    layouts.ClassNames(real_dirs=['photos/raw'])


def test_unrecognised_layout_names_the_class_folders_and_the_settings(tmp_path):
  with pytest.raises(layouts.LayoutError) as info:
    _detect(tmp_path, ['photos/a.png', 'renders/b.png'])
  message = str(info.value)
  assert 'real: real/, human/, authentic/, nature/' in message
  assert 'fake: fake/, ai/, ai_generated/, ai-generated/, generated/, synthetic/' in message
  assert '--set data.fake_dirs=' in message and '--set data.real_dirs=' in message


def test_manifest_rows_through_links_leaving_the_folder_are_not_read(tmp_path):
  data = _tree(tmp_path / 'data', ['a.png', 'sub/b.png'])
  _tree(tmp_path / 'elsewhere', ['o.png', 'dir/p.png'])
  os.symlink(tmp_path / 'elsewhere' / 'o.png', tmp_path / 'data' / 'link.png')
  os.symlink(tmp_path / 'elsewhere' / 'dir', tmp_path / 'data' / 'linked_dir')
  os.symlink('a.png', tmp_path / 'data' / 'sub' / 'inside.png')
  with open(os.path.join(data, 'm.csv'), 'w') as f:
    f.write('path,label\na.png,real\nsub/b.png,fake\nlink.png,fake\nlinked_dir/p.png,real\n'
            'sub/inside.png,real\nsub/../a.png,real\n')
  layout = layouts.detect(data)
  entries = dict(layout.list_files(data))
  assert entries == {'a.png': None, 'sub/b.png': None, 'sub/inside.png': None,
                     'link.png': entries['link.png'],
                     'linked_dir/p.png': entries['linked_dir/p.png']}
  for rel in ('link.png', 'linked_dir/p.png'):
    reason, detail = folders.problem_reason(entries[rel])
    assert reason == 'outside_data_folder' and str(tmp_path / 'elsewhere') in detail
    assert folders.is_link_outside(entries[rel])
  assert all(problem is None for problem in dict(layout.list_files(data, True)).values())


def test_manifest_paths_stay_inside_the_folder_local_or_remote():
  inside = folders.relative_inside
  assert inside('/data', 'a/b.png') == 'a/b.png' and inside('/data', './a/../b.png') == 'b.png'
  assert inside('/data', '/data/a/b.png') == 'a/b.png'
  for path in ('../x.jpg', 'a/../../x.jpg', '/etc/hostname', '/data2/x.png', 'gs://b/x.png'):
    assert inside('/data', path) is None, path
  assert inside('gs://b/data', 'gs://b/data/a.png') == 'a.png'
  assert inside('gs://b/data/', 'a.png') == 'a.png'
  for path in ('gs://b/data2/a.png', 'gs://other/data/a.png', '/data/a.png', '../a.png'):
    assert inside('gs://b/data', path) is None, path
